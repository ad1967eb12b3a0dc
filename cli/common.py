"""What every command shares: the consoles, a rich progress bar, one-line errors, exit codes.

Exit codes batch jobs can rely on: 0 success (including "up to date, skipped"),
1 bad input or failed stage (one line on stderr naming the file), 2 bad usage
(typer's own), 130 interrupted (SIGINT), 143 terminated (SIGTERM, what cron,
systemd, SLURM and Kubernetes send): both remove the temporary files.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from enum import Enum
from typing import Any, Iterator, Mapping

import typer
from rich import box
from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ..pipeline.errors import ChoralError, ConfigError
from ..pipeline.text import DIGITS_POLICIES, TextNormalizer
from . import logs

# The text normaliser's digits policies as an Enum, which typer turns into a checked choice.
Digits = Enum("Digits", {policy: policy for policy in DIGITS_POLICIES}, type=str)  # type: ignore[misc]
# The normaliser's own default, as the default of every ``--digits``.
DEFAULT_DIGITS = Digits(TextNormalizer().digits)


DIGITS_HELP = "Digits policy of the text normaliser (the same for grouping, propagation and WER)."

EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM killed

LOG_WIDTH = 10_000  # columns of a console that is not a terminal: in effect, no wrapping


class LogConsole(Console):
    """A rich console that, when its stream is not a terminal (cron logs, pipes, log shippers), writes each
    line whole (no wrapping at 80 columns mid-way through a stage line or a table cell); on a terminal it is
    rich's own. Tables choral builds drop their box drawing there too (:func:`plain_output`)."""

    json_lines = False  # --log-json: what this console prints is written as JSON log records instead

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """rich's ``print``; with ``json_lines`` set (``--log-json``, error console), a message given as text is
        written as one JSON record (level error, logger ``choral.cli``), its markup stripped."""
        if self.json_lines and objects and all(isinstance(o, str) for o in objects):
            text = " ".join(Text.from_markup(o).plain for o in objects)
            self.file.write(logs.json_record("error", "choral.cli", text) + "\n")
            self.file.flush()
            return
        super().print(*objects, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or self._width is not None or "COLUMNS" in self._environ:
            return size
        return ConsoleDimensions(LOG_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = LogConsole()
error_console = LogConsole(stderr=True)


def plain_output() -> bool:
    """True when stdout is not a terminal: summaries are written as plain lines, without box drawing."""
    return not console.is_terminal


class RichProgress:
    """Implements the pipeline's Progress protocol with a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def task(self, description: str, total: int | None) -> None:
        if self._task is not None:  # close the previous phase as complete, at the count it reached
            previous = next(t for t in self._progress.tasks if t.id == self._task)
            done = previous.completed if previous.total is None else previous.total
            self._progress.update(self._task, total=done, completed=done)
            self._progress.stop_task(self._task)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)


@contextmanager
def progress_bar() -> Iterator[RichProgress]:
    """A progress bar on stderr (so stdout stays clean for summaries and pipes)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=error_console,
        transient=False,
        # batch jobs and cron logs get the summary, not a frozen progress bar
        disable=not error_console.is_terminal,
    ) as progress:
        yield RichProgress(progress)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so every atomic writer removes its temporary file as on Ctrl-C."""

    def __init__(self) -> None:
        super().__init__("terminated (SIGTERM)")


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM raises :class:`Terminated` instead of killing the
    process on the spot, which left ``.tmp.PID`` files behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def stage_errors(command: str, options: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn choral's user-facing errors into one stderr line and exit code 1.

    A config value the library rejects is named by the option that set it: ``--`` plus the field's name with
    dashes (``search_temperature``: ``--search-temperature``), or ``options[field]`` where the command
    spells it otherwise (``{"fusion_weight": "--lambda"}``).
    """

    def option_of(field: str) -> str:
        return (options or {}).get(field, "--" + field.replace("_", "-"))

    try:
        with _sigterm_interrupts():
            yield
    except ChoralError as error:
        message = error.message(option_of) if isinstance(error, ConfigError) else str(error)
        error_console.print(f"[bold red]choral {command}: error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Terminated:
        error_console.print(f"choral {command}: terminated (SIGTERM); temporary files removed, no output was "
                            "written", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_TERMINATED) from None
    except KeyboardInterrupt:
        error_console.print(f"choral {command}: interrupted; no output was written", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column key/value table for the end-of-stage summary."""
    plain = plain_output()
    # in a log, the table is at least as wide as its title, so a long output path is not wrapped onto two lines
    table = Table(title=title, show_header=False, title_justify="left", box=None if plain else box.HEAVY_HEAD,
                  pad_edge=not plain, min_width=len(title) if plain else None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return table


def print_skipped(command: str, output: object) -> None:
    console.print(f"choral {command}: {output} is up to date (inputs and parameters unchanged); skipped. "
                  "Use --force to redo it.", soft_wrap=True, highlight=False)


def fail_if(condition: bool, message: str) -> None:
    """Usage errors found after parsing (e.g. option combinations)."""
    if condition:
        error_console.print(f"[bold red]error:[/] {message}")
        sys.exit(2)
