"""``choral tune``: pick propagation parameters by cross-validation on annotated cuts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from ..pipeline.propagate import PropagateConfig
from ..pipeline.teacher.device import DEVICE_HELP, check_device_spec
from ..pipeline.teacher.precision import PRECISION_HELP, check_precision_spec
from ..pipeline.teacher.registry import teacher_help, teacher_scorer
from ..pipeline.text import TextNormalizer
from ..pipeline.tune import MIN_ANNOTATED, TuneConfig, parse_grid, tune_stage
from .common import (
    DEFAULT_DIGITS,
    DIGITS_HELP,
    Digits,
    console,
    plain_output,
    print_skipped,
    progress_bar,
    stage_errors,
    summary_table,
)


def tune(
    grouped: Path = typer.Argument(..., help="Grouped manifest from `choral group` (with annotated cuts)."),
    graph_file: Path = typer.Argument(..., metavar="GRAPH", help="graph.npz from `choral graph`."),
    output: Path = typer.Argument(..., help="Where to write the chosen parameters, e.g. RUN/params.yaml "
                                            "(a report goes beside it as .json)."),
    folds: int = typer.Option(5, min=2, help="Cross-validation folds over the annotated cuts."),
    algorithm: str = typer.Option("spreading", help="spreading or propagation."),
    alpha: Optional[str] = typer.Option(None, help="Comma-separated alphas to try [default: 0.5,0.9,0.99]."),
    fusion_weight: Optional[str] = typer.Option(None, "--lambda", help="Comma-separated λ values "
                                                                       "[default: 0,0.05,0.1,0.2,0.3,0.5,0.7]."),
    temperature: Optional[str] = typer.Option(None, help="Comma-separated temperatures [default: 0.5,1,2]."),
    threshold_scale: Optional[str] = typer.Option(None, help="Comma-separated threshold scales "
                                                             "[default: 0.8,1,1.25]."),
    seed: int = typer.Option(0, help="Seed of the fold assignment."),
    min_annotated: int = typer.Option(TuneConfig().min_annotated, min=2, help=(
        "Fewest annotated cuts to search the grid on; below it the propagate values given here hold and only "
        "the calibration is fitted.")),
    answer_strength: float = typer.Option(TuneConfig().answer_strength, min=0.0, help=(
        "Pull toward its prior of the answer model, which gives the confidence written for a label: rescaled on "
        "the held-out annotated cuts' answers (0: the prior as it is). It moves no label.")),
    teacher: Optional[str] = typer.Option(None, help=teacher_help(
        " that scores transcripts borrowed from neighbours, as `choral propagate --teacher` will",
        "Without it they get a fixed floor score.")),
    max_cuts: int = typer.Option(TuneConfig().max_cuts, help=(
        "Cuts of annotated groups searched in full (the whole grid); above it whole groups are sampled up to "
        "--sample-cuts and searched coarse to fine.")),
    sample_cuts: int = typer.Option(TuneConfig().sample_cuts, help=(
        "Above --max-cuts: cuts of the whole annotated groups sampled (at most --max-cuts).")),
    device: str = typer.Option("auto", help=DEVICE_HELP + " (the --teacher scorer)"),
    precision: str = typer.Option("auto", help=PRECISION_HELP + " (the --teacher scorer)"),
    digits: Digits = typer.Option(DEFAULT_DIGITS, help=DIGITS_HELP),
    force: bool = typer.Option(False, "--force", help="Redo the stage even if the outputs are up to date."),
) -> None:
    """Choose alpha, lambda, temperature and threshold scale by k-fold cross-validation over the annotated
    cuts only (hide a fold's references, propagate, score those cuts). Writes a YAML for
    `choral propagate --params` and reports how WER falls as the confidence threshold rises.

    With fewer than --min-annotated annotated cuts a search would follow noise: the values given here
    hold and only the calibration is fitted. With fewer than 2 there is nothing to tune on: the YAML
    then holds the propagate values given here (the defaults and --algorithm), untuned."""
    with stage_errors("tune", options={"fusion_weight": "--lambda"}):
        grid = parse_grid({"alpha": alpha, "fusion_weight": fusion_weight, "temperature": temperature,
                           "threshold_scale": threshold_scale}, TuneConfig(folds=folds, seed=seed,
                                                                              min_annotated=min_annotated,
                                                                              max_cuts=max_cuts,
                                                                              sample_cuts=sample_cuts,
                                                                              answer_strength=answer_strength))
        base = PropagateConfig(algorithm=algorithm)  # type: ignore[arg-type]
        normalizer = TextNormalizer(digits=digits.value)
        with progress_bar() as progress:
            scorer = (teacher_scorer(grouped, teacher, device=check_device_spec(device),
                                     precision=check_precision_spec(precision)) if teacher else None)
            stage = tune_stage(grouped, graph_file, output, base=base, grid=grid, normalizer=normalizer,
                               scorer=scorer, base_origin="`choral tune`'s options", force=force, progress=progress)
    if stage.skipped:
        print_skipped("tune", output)
        return
    if stage.tuned is None:
        console.print(f"choral tune: {grouped} holds {stage.n_annotated} annotated cut(s), tuning needs "
                      f"{MIN_ANNOTATED}; wrote {output} with the propagate values given, untuned.",
                      soft_wrap=True, highlight=False)
        return
    summary = stage.tuned
    best = summary.best
    console.print(summary_table(f"choral tune -> {output}", [
        ("annotated cuts", f"{summary.n_annotated:,} in {summary.folds} folds"),
        ("combinations", f"{summary.n_combinations:,}"),
        ("held-out WER: teacher", f"{100 * summary.teacher_wer:.2f}%"),
        ("held-out WER: choral", f"{100 * summary.best_wer:.2f}%"),
        ("best", f"alpha {best.alpha}, lambda {best.fusion_weight}, T {best.temperature}, "
                 f"threshold x{best.threshold_scale}"),
        ("time", f"{summary.seconds:.1f} s"),
    ]))
    curve = Table(title="held-out WER by confidence threshold", title_justify="left",
                  box=None if plain_output() else box.HEAVY_HEAD)
    for column in ("min confidence", "kept cuts", "kept %", "WER"):
        curve.add_column(column, justify="right")
    for point in summary.confidence_curve:
        wer = "-" if point["wer"] is None else f"{100 * point['wer']:.2f}%"
        curve.add_row(f"{point['min_confidence']:.2f}", f"{point['kept_cuts']:,}",
                      f"{100 * point['kept_fraction']:.1f}", wer)
    console.print(curve)
