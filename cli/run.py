"""``choral run``: the whole pipeline from one YAML into one run directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ..pipeline.executor.config import ExecutorKind
from ..pipeline.run import STAGES, RunLocked, StageResult, load_run_config, run_pipeline
from .common import console, error_console, progress_bar, stage_errors, summary_table
from .report import outcome_table, wer_table

EXIT_USAGE = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the run directory; try again later


def _stage_line(result: StageResult) -> None:
    label, style = {"ran": ("ran", "green"), "skipped": ("up to date, skipped", "dim"),
                    "off": ("off", "dim"), "failed": ("failed", "bold red")}[result.status]
    seconds = f"{result.seconds:7.1f} s" if result.status in ("ran", "failed") else " " * 9
    # pad the visible text, not the markup, so the columns line up
    console.print(f"  {result.stage:<9s} [{style}]{label:<19s}[/] {seconds}  {result.detail}", highlight=False)


def run(
    config_file: Path = typer.Argument(..., metavar="CONFIG", help="Run config (YAML), e.g. configs/demo.yaml."),
    run_dir: Optional[Path] = typer.Option(None, help="Run directory [default: run_dir of the config]."),
    until: str = typer.Option("eval", help=f"Last stage to run: {', '.join(STAGES)}."),
    force: bool = typer.Option(False, "--force", help="Redo every stage even if its outputs are up to date."),
    force_stage: Optional[list[str]] = typer.Option(None, "--force-stage", metavar="STAGE",
                                                    help="Redo this stage even if it is up to date (repeatable); "
                                                         "later stages rerun if its output changed."),
    executor: Optional[str] = typer.Option(None, "--executor", metavar="local|ray",
                                           help="Where the stages run [default: executor.kind of the config, "
                                                "else local]: ray decodes in shards on a pool of teacher actors "
                                                "and runs group, graph and propagate on the cluster."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="auto|HOST:PORT",
                                              help="The Ray cluster to join (auto: the one `ray start` runs "
                                                   "here) [default: executor.address, else start Ray here]."),
) -> None:
    """Run prepare -> decode -> group -> graph -> tune -> propagate -> export -> eval into one run directory.

    Stages whose outputs are up to date with their inputs and parameters are skipped, so a repeated run
    with no new input does no work (safe under cron). The config is checked completely before any work:
    an unknown key or a wrong type is an error naming the key. Exit codes: 0 done, 1 bad input or config,
    2 bad usage (an unknown --until stage), 75 another run holds the run directory, 130 interrupted,
    143 terminated (SIGTERM).
    """
    for option, stage in [("--until", until), *(("--force-stage", name) for name in force_stage or [])]:
        if stage not in STAGES:  # a usage error: exit 2, as the README promises
            error_console.print(f"[bold red]choral run: error:[/] {option} {stage!r} is not a stage; choose one "
                                f"of {', '.join(STAGES)}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE)
    if executor is not None and executor not in ("local", "ray"):
        error_console.print(f"[bold red]choral run: error:[/] --executor {executor!r}: choose local or ray",
                            highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)
    with stage_errors("run"):
        config = load_run_config(config_file)
        if run_dir is not None:
            config = replace(config, run_dir=run_dir)
        if executor is not None or ray_address is not None:
            kind: ExecutorKind = "ray" if executor == "ray" or (executor is None and ray_address is not None) \
                else "local" if executor == "local" else config.executor.kind
            config = replace(config, executor=replace(
                config.executor, kind=kind,
                address=ray_address if ray_address is not None else config.executor.address))
        console.print(f"choral run {config_file} -> {config.run_dir}", highlight=False, soft_wrap=True)
        try:
            with progress_bar() as progress:
                summary = run_pipeline(config, until=until, force=force, force_stages=tuple(force_stage or ()),
                                       progress=progress, on_stage=_stage_line)
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
        console.print(wer_table(summary.report, "unannotated", "run"))
        console.print(outcome_table(summary.report, "unannotated", "run"))
        console.print(f"report: {summary.run_dir / 'eval' / 'report.md'} and report.png", highlight=False,
                      soft_wrap=True)
