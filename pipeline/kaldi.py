"""Kaldi data-directory tables (``wav.scp``, ``segments``, ``text``, ``utt2spk``): one line reader.

Each non-blank line is ``<key> <rest of the line>``; prepare reads a data directory with it and
:mod:`.references` reads a ``text`` file of transcripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .errors import InputError


def iter_table(path: Path) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line number, key, rest of the line)`` per non-blank line; a key-only line gives ``""``."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, raw in enumerate(handle, start=1):
                parts = raw.strip().split(maxsplit=1)
                if parts:
                    yield number, parts[0], parts[1] if len(parts) == 2 else ""
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read ({error})") from None


def read_table(path: Path, *, values: bool = True) -> dict[str, str]:
    """First field -> rest of the line; a key listed twice is an error.

    With ``values=False`` a line holding only the key maps to ``""`` (an empty transcript in ``text``).
    """
    table: dict[str, str] = {}
    for number, key, value in iter_table(path):
        if values and not value:
            raise InputError(path, f"{key!r} has no value", line=number)
        if key in table:
            raise InputError(path, f"{key!r} is listed twice", line=number)
        table[key] = value
    return table
