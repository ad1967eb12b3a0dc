"""Errors that reach the user as one line naming the file (and cut) at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


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


class ConfigError(ChoralError, ValueError):
    """A config value out of range: ``field`` names the setting, and whoever reports the error spells it
    as the user wrote it (``key 'decode.nbest'`` from a YAML file, ``--nbest`` from the command line).

    ``problem`` follows the setting's name ("must be positive, not 0"); ``{name}`` in it, for each name in
    ``related``, marks another setting of the same config, spelled the same way.
    """

    def __init__(self, field: str, problem: str, *, related: tuple[str, ...] = ()) -> None:
        self.field = field
        self.problem = problem
        self.related = related
        super().__init__(self.message(str))

    def message(self, spell: Callable[[str], str]) -> str:
        """The error with every setting's name written by ``spell`` (a field name to a key or flag)."""
        problem = self.problem
        for name in self.related:
            problem = problem.replace("{" + name + "}", spell(name))
        return f"{spell(self.field)} {problem}"
