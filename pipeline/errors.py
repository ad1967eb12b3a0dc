"""Errors that reach the user as one line naming the file (and cut) at fault."""

from __future__ import annotations

from pathlib import Path


class ChoralError(Exception):
    """A problem the user can fix (bad input, bad option); the CLI prints it as one line."""


class InputError(ChoralError):
    """Bad content in an input file: ``<file>[:<line>][ cut <id>]: <problem>``."""

    def __init__(
        self,
        path: str | Path,
        problem: str,
        *,
        line: int | None = None,
        cut_id: str | None = None,
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.line = line
        self.cut_id = cut_id
        where = self.path if line is None else f"{self.path}:{line}"
        if cut_id is not None:
            where += f" (cut {cut_id})"
        super().__init__(f"{where}: {problem}")
