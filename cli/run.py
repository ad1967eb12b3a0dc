"""``choral run`` and ``choral prepare``: the whole pipeline from one YAML, and the input stage alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..pipeline.errors import ChoralError
from ..pipeline.prepare import InputConfig, prepare_input
from ..pipeline.run import STAGES, RunLocked, StageResult, load_run_config, run_pipeline
from .common import console, error_console, print_skipped, progress_bar, stage_errors, summary_table

EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the run directory; try again later


def _stage_line(result: StageResult) -> None:
    label, style = {"ran": ("ran", "green"), "skipped": ("up to date, skipped", "dim"),
                    "off": ("off", "dim")}[result.status]
    seconds = f"{result.seconds:7.1f} s" if result.status == "ran" else " " * 9
    # pad the visible text, not the markup, so the columns line up
    console.print(f"  {result.stage:<9s} [{style}]{label:<19s}[/] {seconds}  {result.detail}", highlight=False)


def _wer_table(report: dict, by: tuple[str, ...]) -> Table:
    split = report["unannotated"]
    table = Table(title="unannotated cuts: WER (teacher -> choral; oracle = best of the n-best)",
                  title_justify="left")
    for column in ("slice", "cuts", "teacher", "choral", "oracle", "relative reduction"):
        table.add_column(column, justify="left" if column == "slice" else "right")

    def row(label: str, teacher: float, choral: float, oracle: float, cuts: int, reduction: float) -> None:
        table.add_row(label, f"{cuts:,}", f"{100 * teacher:.2f}%", f"{100 * choral:.2f}%", f"{100 * oracle:.2f}%",
                      f"{100 * reduction:.1f}%")

    row("overall", split["teacher"]["wer"], split["choral"]["wer"], split["oracle"]["wer"], split["n_cuts"],
        split["relative_wer_reduction"])
    for name in by:
        for value, info in split.get("breakdown", {}).get(name, {}).items():
            row(f"{name} = {value}", split["teacher"]["by"][name][value], split["choral"]["by"][name][value],
                split["oracle"]["by"][name][value], info["n_cuts"], info["relative_wer_reduction"])
    return table


def run(
    config_file: Path = typer.Argument(..., metavar="CONFIG", help="Run config (YAML), e.g. configs/demo.yaml."),
    run_dir: Optional[Path] = typer.Option(None, help="Run directory [default: run_dir of the config]."),
    until: str = typer.Option("eval", help=f"Last stage to run: {', '.join(STAGES)}."),
    force: bool = typer.Option(False, "--force", help="Redo every stage even if its outputs are up to date."),
) -> None:
    """Run prepare -> decode -> group -> graph -> tune -> propagate -> export -> eval into one run directory.

    Stages whose outputs are up to date with their inputs and parameters are skipped, so a repeated run
    with no new input does no work (safe under cron). The config is checked completely before any work:
    an unknown key or a wrong type is an error naming the key. Exit codes: 0 done, 1 bad input or config,
    75 another run holds the run directory, 130 interrupted.
    """
    with stage_errors("run"):
        if until not in STAGES:
            raise ChoralError(f"--until {until!r} is not a stage; choose one of {', '.join(STAGES)}")
        config = load_run_config(config_file)
        if run_dir is not None:
            config = replace(config, run_dir=run_dir)
        console.print(f"choral run {config_file} -> {config.run_dir}", highlight=False, soft_wrap=True)
        try:
            with progress_bar() as progress:
                summary = run_pipeline(config, until=until, force=force, progress=progress, on_stage=_stage_line)
        except RunLocked as error:
            error_console.print(f"[bold red]choral run: error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_LOCKED) from None
    ran = summary.ran
    console.print(summary_table(f"choral run -> {summary.run_dir}", [
        ("stages run", ", ".join(ran) if ran else "none (everything up to date)"),
        ("stages skipped", ", ".join(s.stage for s in summary.stages if s.status == "skipped") or "none"),
        ("time", f"{summary.seconds:.1f} s"),
        ("peak memory", f"{max((s.peak_rss_mib for s in summary.stages), default=0):,.0f} MiB"),
    ]))
    if summary.report is not None:
        console.print(_wer_table(summary.report, config.eval.by))
        console.print(f"report: {summary.run_dir / 'eval' / 'report.md'} and report.png", highlight=False,
                      soft_wrap=True)


def prepare(
    output: Path = typer.Argument(..., help="Cut manifest to write, e.g. RUN/prepare/cuts.jsonl.gz."),
    audio_dir: Optional[Path] = typer.Option(None, help="Folder of audio files (searched recursively)."),
    kaldi_dir: Optional[Path] = typer.Option(None, help="Kaldi data directory (wav.scp, segments, text, ...)."),
    nemo_manifest: Optional[Path] = typer.Option(None, help="NeMo JSON-lines manifest (audio_filepath, duration)."),
    cuts: Optional[Path] = typer.Option(None, help="Lhotse cut manifest (to rebase paths or attach annotations)."),
    audio_root: Optional[Path] = typer.Option(None, help="Base folder of relative audio paths in --cuts."),
    annotations: Optional[Path] = typer.Option(None, help="Transcripts of some cuts: Kaldi `text` file or "
                                                          "lhotse supervisions; they seed propagation."),
    sampling_rate: int = typer.Option(16000, help="Sampling rate of command (|) entries in a Kaldi wav.scp "
                                                  "(audio files give their own)."),
    force: bool = typer.Option(False, "--force", help="Redo even if the output is up to date."),
) -> None:
    """Make a lhotse cut manifest from an audio folder, a Kaldi data directory or a NeMo manifest.

    Files whose audio header is unreadable are skipped and listed in failed.jsonl beside the output.
    """
    with stage_errors("prepare"):
        config = InputConfig(cuts=cuts, audio_dir=audio_dir, kaldi_dir=kaldi_dir, nemo_manifest=nemo_manifest,
                             audio_root=audio_root, annotations=annotations, sampling_rate=sampling_rate)
        with progress_bar() as progress:
            summary = prepare_input(config, output, force=force, progress=progress)
    if summary.skipped:
        print_skipped("prepare", output)
        return
    console.print(summary_table(f"choral prepare -> {output}", [
        ("cuts", f"{summary.n_cuts:,} ({summary.hours:.2f} h)"),
        ("annotated", f"{summary.n_annotated:,}"),
        ("unreadable (failed.jsonl)", f"{summary.n_failed:,}"),
        ("time", f"{summary.seconds:.1f} s"),
    ]))
