"""Shared fixtures: the protocol's scripts import each other by name, so their folder goes on ``sys.path``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "benchmarks" / "generalisation"


@pytest.fixture(scope="module")
def protocol_script() -> Iterator[Callable[[str], object]]:
    """An importer of ``benchmarks/generalisation`` scripts by module name, for one test module."""
    sys.path.insert(0, str(PROTOCOL))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(PROTOCOL))
