"""``choral decode``: n-best lists and embeddings from the teacher transducer."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..pipeline.decode import DecodeConfig, DecodeSummary, decode_manifest
from ..pipeline.teacher.device import DEVICE_HELP, check_device_spec
from ..pipeline.teacher.precision import PRECISION_HELP, check_precision_spec
from ..pipeline.teacher.registry import teacher_help
from .common import RichProgress, console, error_console, print_skipped, stage_errors, summary_table

_DEFAULT = DecodeConfig()


class _RtfColumn(ProgressColumn):
    """The running real-time factor, set by the stage after every batch."""

    def render(self, task) -> Text:
        rtf = task.fields.get("rtf")
        return Text(f"RTF {rtf:.3f}" if rtf is not None else "RTF -")


class _DecodeProgress(RichProgress):
    """The common progress bar plus an RTF column."""

    def show(self, summary: DecodeSummary) -> None:
        if self._task is not None and summary.audio_seconds > 0:
            self._progress.update(self._task, rtf=summary.rtf)


@contextmanager
def _progress_bar() -> Iterator[_DecodeProgress]:
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _RtfColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=error_console, transient=False, disable=not error_console.is_terminal,
    ) as progress:
        yield _DecodeProgress(progress)


def decode(
    cuts: Path = typer.Argument(..., help="Lhotse cut manifest with recordings, e.g. data/unlabelled.jsonl.gz."),
    out_dir: Path = typer.Argument(..., help="Run folder: decoded.jsonl.gz, embeddings.h5 and failed.jsonl go here."),
    teacher: str = typer.Option("default", help=teacher_help()),
    nbest: int = typer.Option(_DEFAULT.nbest, min=1, help="Hypotheses kept per cut (at most --beam)."),
    beam: int = typer.Option(_DEFAULT.beam, min=1, help="Beam of the modified beam search."),
    search_temperature: float = typer.Option(_DEFAULT.search_temperature, min=0.01,
                                             help="Joiner temperature during the search only: above 1 the beam "
                                                  "keeps more diverse hypotheses (a better n-best oracle); the "
                                                  "n-best scores stay exact log-likelihoods."),
    batch_duration: float = typer.Option(_DEFAULT.batch_duration, min=0.1,
                                         help="Seconds of audio decoded together (more: faster, more memory)."),
    save_frames: bool = typer.Option(False, "--save-frames", help="Also store encoder frames (custom.frames) "
                                                                   "for DTW over frames in `choral graph`."),
    on_error: str = typer.Option("skip", help="Cut with missing/unreadable/empty audio: skip (list it in "
                                              "failed.jsonl) or fail (stop, write nothing)."),
    min_duration: float = typer.Option(_DEFAULT.min_duration, help="Cuts shorter than this (seconds) are not "
                                                                     "decoded but listed in failed.jsonl."),
    max_duration: float = typer.Option(_DEFAULT.max_duration, help="Cuts longer than this (seconds) are not "
                                                                     "decoded but listed in failed.jsonl: the "
                                                                     "teacher labels a long recording with its "
                                                                     "first sentence; segment it first."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    workers: int = typer.Option(_DEFAULT.workers, min=0, help="Processes that load audio and compute features "
                                                               "ahead of the model (0: the decoding process does)."),
    measure_snr: bool = typer.Option(_DEFAULT.measure_snr, "--measure-snr/--no-measure-snr",
                                     help="Write each cut's energy-percentile SNR (custom.snr_db, dB), which "
                                          "propagate's noisy_pair_snr reads (one more read of the audio)."),
    force: bool = typer.Option(False, "--force", help="Redo the stage even if the output is up to date."),
) -> None:
    """Decode cuts with the teacher transducer: n-best hypotheses with log-probabilities and pooled embeddings."""
    with stage_errors("decode"):
        config = DecodeConfig(nbest=nbest, beam=beam, search_temperature=search_temperature,
                              batch_duration=batch_duration, save_frames=save_frames,
                              on_error=on_error, min_duration=min_duration,  # type: ignore[arg-type]
                              max_duration=max_duration, workers=workers, measure_snr=measure_snr)
        with _progress_bar() as progress:
            summary = decode_manifest(cuts, out_dir, teacher, config, force=force, progress=progress,
                                      on_batch=progress.show, device=check_device_spec(device),
                                      precision=check_precision_spec(precision))
    if summary.skipped:
        print_skipped("decode", summary.output)
        return
    console.print(summary_table(f"choral decode -> {summary.output}", [
        ("cuts decoded", f"{summary.n_decoded:,}"),
        ("cuts failed", f"{summary.n_failed:,}" + (f" (see {out_dir / 'failed.jsonl'})" if summary.n_failed else "")),
        ("audio", f"{summary.audio_seconds / 3600:.2f} h"),
        ("time", f"{summary.seconds:.1f} s"),
        ("real-time factor", f"{summary.rtf:.3f}"),
        ("precision", summary.precision),
    ]))
