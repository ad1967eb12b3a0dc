"""``choral export``: write the rescored pseudo-labels as the student's training manifests."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..pipeline.export import SOURCES, ExportConfig, ExportSummary, export_manifest
from .common import console, print_skipped, progress_bar, stage_errors, summary_table


class ExportFormat(str, Enum):
    """The training-manifest shapes ``choral export`` writes."""

    lhotse = "lhotse"
    nemo = "nemo"
    kaldi = "kaldi"


def export(
    rescored: Path = typer.Argument(..., help="Rescored manifest from `choral propagate` (cuts with custom.choral), "
                                              "e.g. RUN/rescored.jsonl.gz."),
    out_dir: Path = typer.Argument(..., help="Folder for the training manifests, e.g. data/fbank for an icefall "
                                             "recipe."),
    format: ExportFormat = typer.Option(ExportFormat.lhotse, "--format", case_sensitive=False,
                                        help="lhotse: OUT_DIR/PREFIX_cuts_SPLIT.jsonl.gz (icefall/k2 recipes); "
                                             "nemo: OUT_DIR/PREFIX_SPLIT.json (JSON lines with audio_filepath, "
                                             "duration, text, offset for segments); kaldi: data dir "
                                             "OUT_DIR/PREFIX_SPLIT/ (wav.scp, text, utt2spk, spk2utt, segments)."),
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
    """Export rescored pseudo-labels as training manifests for a student model (lhotse/icefall, NeMo or Kaldi).

    Every kept cut gets one transcript: its reference when annotated, else its rescored pseudo-label.

    lhotse: one supervision spanning each cut, with teacher_text, confidence and source in its custom.

    Kaldi: sorted in C byte order; utterance ids get a speaker prefix when Kaldi's sort order needs one.

    Pseudo-labels with empty text are always dropped.
    """
    with stage_errors("export"):
        config = ExportConfig(format=format.value, prefix=prefix, split=split,  # type: ignore[arg-type]
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
