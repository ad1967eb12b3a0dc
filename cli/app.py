"""The ``choral`` command: one sub-command per pipeline stage, plus ``run`` for all of them."""

from __future__ import annotations

import os
from typing import Optional

import typer

from ..kernels import threads as thread_budget
from . import decode, export, export_teacher, graph, group, logs, prepare, propagate, synth, tune
from . import eval as eval_
from . import run as run_
from .common import error_console, fail_if

app = typer.Typer(
    name="choral",
    help="Cross-utterance rescoring of teacher RNN-T pseudo-labels: group utterances with overlapping "
         "hypotheses, link those that sound alike, propagate good hypotheses across the graph.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="Log what choral does on stderr: -v for info lines (why a stage runs or is "
                                     "skipped, which teacher and DTW backend), -vv for debug. Without it, "
                                     f"the {logs.ENV_LEVEL} environment variable (debug, info, warning, error) "
                                     "sets the level; warnings only by default."),
    log_json: bool = typer.Option(False, "--log-json",
                                  help="Write log records and errors on stderr as JSON lines (time, level, logger, "
                                       f"message, stage, path) for log shippers; also {logs.ENV_FORMAT}=json."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="Threads this command may use, shared by the teacher (torch), DTW "
                                               "and BLAS [default: the run config's `threads`, else "
                                               "OMP_NUM_THREADS, else the cores the process may run on]. Give "
                                               "each of several jobs on one machine its share of the cores."),
) -> None:
    """Options for every command (give them before the command: ``choral -v run configs/demo.yaml``)."""
    try:
        logs.configure(verbose, log_json)
    except logs.LogLevelError as error:
        fail_if(True, str(error))
    error_console.json_lines = logs.resolve_format(log_json, os.environ.get(logs.ENV_FORMAT)) == "json"
    if threads is not None:
        thread_budget.set_budget(threads)


app.command("run")(run_.run)
app.command("prepare")(prepare.prepare)
app.command("decode")(decode.decode)
app.command("group")(group.group)
app.command("graph", cls=graph.GraphCommand)(graph.graph)
app.command("propagate")(propagate.propagate)
app.command("tune")(tune.tune)
app.command("synth")(synth.synth)
app.command("export", cls=export.ExportCommand)(export.export)
app.command("export-teacher")(export_teacher.export_teacher)
app.command("eval")(eval_.eval_command)


def main() -> None:
    """Console-script entry point."""
    app()
