"""How library stages report progress without depending on a terminal.

Stages accept any object with ``task`` (start a phase with a known total) and
``advance`` (count work done); the CLI passes a rich progress bar, tests and
library users pass nothing and get :class:`NullProgress`.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> None:
        """Start a new phase of ``total`` units (None when unknown)."""

    def advance(self, amount: int = 1) -> None:
        """Count ``amount`` units of the current phase as done."""


class NullProgress:
    """Progress reporter that reports nothing."""

    def task(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass
