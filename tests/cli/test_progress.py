import io

from rich.console import Console
from rich.progress import Progress

from choral.cli.common import RichProgress


def test_phases_close_at_their_own_count_on_a_terminal() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with Progress(console=console, auto_refresh=False) as bar:
        progress = RichProgress(bar)
        progress.task("reading", None)
        progress.advance(7)
        progress.task("computing", 3)
        progress.advance(2)
        first, second = bar.tasks
        assert (first.completed, first.total) == (7, 7)
        assert (second.completed, second.total) == (2, 3)
        progress.task("writing", 1)
        assert (bar.tasks[1].completed, bar.tasks[1].total) == (3, 3)
