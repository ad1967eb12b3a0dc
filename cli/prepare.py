"""``choral prepare``: the input stage alone (audio folder, Kaldi directory, NeMo or lhotse manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..pipeline.prepare import InputConfig, prepare_input
from .common import console, print_skipped, progress_bar, stage_errors, summary_table

_DEFAULT = InputConfig(audio_dir=Path("."))


def prepare(
    output: Path = typer.Argument(..., help="Cut manifest to write, e.g. RUN/prepare/cuts.jsonl.gz."),
    audio_dir: Optional[Path] = typer.Option(None, help="Folder of audio files (searched recursively)."),
    kaldi_dir: Optional[Path] = typer.Option(None, help="Kaldi data directory (wav.scp, segments, text, ...)."),
    nemo_manifest: Optional[Path] = typer.Option(None, help="NeMo JSON-lines manifest (audio_filepath, duration)."),
    cuts: Optional[Path] = typer.Option(None, help="Lhotse cut manifest (to rebase paths or attach annotations)."),
    audio_root: Optional[Path] = typer.Option(None, help="Base folder of relative audio paths in --cuts."),
    annotations: Optional[Path] = typer.Option(None, help="Transcripts of some cuts: Kaldi `text` file, lhotse "
                                                          "supervisions or lhotse cuts; they seed propagation."),
    sampling_rate: int = typer.Option(16000, help="Sampling rate of command (|) entries in a Kaldi wav.scp "
                                                  "(audio files give their own)."),
    max_cut_duration: float = typer.Option(_DEFAULT.max_cut_duration, help="Cuts longer than this (seconds) and "
                                           "without a transcript are split into utterances at pauses."),
    min_cut_duration: float = typer.Option(_DEFAULT.min_cut_duration, help="Cuts shorter than this (seconds) are "
                                           "too short to hold a word: skipped, listed in failed.jsonl."),
    min_pause: float = typer.Option(_DEFAULT.min_pause, help="Seconds of quiet that separate two utterances "
                                    "when a long recording is split."),
    force: bool = typer.Option(False, "--force", help="Redo even if the output is up to date."),
) -> None:
    """Make a lhotse cut manifest from an audio folder, a Kaldi data directory or a NeMo manifest.

    Recordings longer than --max-cut-duration are split into utterances at pauses (each piece keeps its
    recording and offset). Files whose audio header is unreadable, and clips shorter than --min-cut-duration,
    are skipped and listed in failed.jsonl beside the output.
    """
    with stage_errors("prepare"):
        config = InputConfig(cuts=cuts, audio_dir=audio_dir, kaldi_dir=kaldi_dir, nemo_manifest=nemo_manifest,
                             audio_root=audio_root, annotations=annotations, sampling_rate=sampling_rate,
                             max_cut_duration=max_cut_duration, min_cut_duration=min_cut_duration,
                             min_pause=min_pause)
        with progress_bar() as progress:
            summary = prepare_input(config, output, force=force, progress=progress)
    if summary.skipped:
        print_skipped("prepare", output)
        return
    console.print(summary_table(f"choral prepare -> {output}", [
        ("cuts", f"{summary.n_cuts:,} ({summary.hours:.2f} h)"),
        ("long recordings split", f"{summary.n_split:,}"),
        ("annotated", f"{summary.n_annotated:,}"),
        ("skipped (failed.jsonl)", f"{summary.n_failed:,}"),
        ("time", f"{summary.seconds:.1f} s"),
    ]))
