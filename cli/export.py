"""``choral export``: write the rescored pseudo-labels as the student's training manifests.

``--format`` takes any registered export format; its check and its help are read
from the registry whenever typer builds the command, so a format registered
after this module was imported is offered too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand, TyperOption

from ..pipeline.export import SOURCES, ExportConfig, ExportSummary, export_format_names, export_formats, export_manifest
from .common import console, print_skipped, progress_bar, stage_errors, summary_table


def _format_help() -> str:
    """``--format``'s help: every registered format with its output and description."""
    return "; ".join(f.help for f in export_formats()) + "."


def _registered_format(value: str) -> str:
    """``--format``'s check: a registered format name, in any case (a usage error otherwise)."""
    names = export_format_names()
    if value.lower() not in names:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(repr(n) for n in names)}.")
    return value.lower()


class ExportCommand(TyperCommand):
    """``choral export`` with ``--format``'s help taken from the format registry each time typer builds it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperOption) and param.name == "format":
                param.help = _format_help()


def export(
    rescored: Path = typer.Argument(..., help="Rescored manifest from `choral propagate` (cuts with custom.choral), "
                                              "e.g. RUN/rescored.jsonl.gz."),
    out_dir: Path = typer.Argument(..., help="Folder for the training manifests, e.g. data/fbank for an icefall "
                                             "recipe."),
    format: str = typer.Option("lhotse", "--format", callback=_registered_format,
                               help="A registered export format (the command lists them)."),
    prefix: str = typer.Option("choral", help="Corpus name at the start of every output name."),
    split: str = typer.Option("train", help="Split name at the end of every output name (train, dev, ...)."),
    min_confidence: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                                   help="Drop pseudo-labels whose confidence is below this. "
                                                        "Annotated cuts (reference text) are always kept."),
    max_wer_estimate: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                                     help="Drop pseudo-labels whose estimated WER "
                                                          "(1 - confidence) is above this."),
    with_fbank: bool = typer.Option(False, "--with-fbank",
                                    help="lhotse only: also compute 80-dim Kaldi-compatible fbank into "
                                         "OUT_DIR/PREFIX_feats_SPLIT.lca (lilcom), as icefall's compute_fbank "
                                         "scripts do; training then needs no feature step."),
    force: bool = typer.Option(False, "--force", help="Redo the export even if the outputs are up to date."),
) -> None:
    """Export rescored pseudo-labels as training manifests for a student model (--format: lhotse/icefall, NeMo,
    Kaldi or any registered format).

    Every kept cut gets one transcript: its reference when annotated, else its rescored pseudo-label.

    Pseudo-labels with empty text are always dropped.
    """
    with stage_errors("export"):
        config = ExportConfig(format=format, prefix=prefix, split=split,
                              min_confidence=min_confidence, max_wer_estimate=max_wer_estimate,
                              with_fbank=with_fbank)
        with progress_bar() as progress:
            summary = export_manifest(rescored, out_dir, config, force=force, progress=progress)
    if summary.skipped:
        print_skipped("export", summary.output)
        return
    console.print(summary_table(f"choral export ({summary.format}) -> {summary.output}", _rows(summary)))


def _amount(count: int, seconds: float) -> str:
    return f"{count:,} ({seconds / 3600:.2f} h)"


def _rows(summary: ExportSummary) -> list[tuple[str, str]]:
    """Kept/dropped cuts and hours, by source and in total, then drop reasons and notes."""
    rows = [("kept", _amount(summary.n_kept, summary.hours_kept * 3600)),
            ("dropped", _amount(summary.n_dropped, summary.hours_dropped * 3600))]
    for source in SOURCES:
        tally = summary.by_source.get(source)
        if tally is not None:
            rows.append((f"  {source}", f"kept {_amount(tally.kept, tally.kept_seconds)}, "
                                        f"dropped {_amount(tally.dropped, tally.dropped_seconds)}"))
    rows += [(f"dropped: {reason}", f"{count:,}") for reason, count in summary.dropped_by_reason.items()]
    if summary.features is not None:
        rows.append(("fbank (80 bins)", str(summary.features)))
    if summary.renamed_utterances:
        rows.append(("utterance ids prefixed with speaker", f"{summary.renamed_utterances:,} (Kaldi sort order)"))
    rows.append(("time", f"{summary.seconds:.1f} s"))
    return rows
