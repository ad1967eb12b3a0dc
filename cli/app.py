"""The ``choral`` command: one sub-command per pipeline stage."""

from __future__ import annotations

import typer

from . import decode, export, graph, group, prepare, propagate, synth, tune
from . import export_teacher
from . import run as run_
from . import eval as eval_

app = typer.Typer(
    name="choral",
    help="Cross-utterance rescoring of teacher RNN-T pseudo-labels: group utterances with overlapping "
         "hypotheses, link those that sound alike, propagate good hypotheses across the graph.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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
