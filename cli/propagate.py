"""``choral propagate``: rescore every cut by label propagation over the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..pipeline.propagate import PropagateConfig, load_params, propagate_manifest
from ..pipeline.teacher.device import DEVICE_HELP, check_device_spec
from ..pipeline.teacher.precision import PRECISION_HELP, check_precision_spec
from ..pipeline.teacher.registry import teacher_help, teacher_scorer
from ..pipeline.text import TextNormalizer
from .common import (
    DEFAULT_DIGITS,
    DIGITS_HELP,
    Digits,
    console,
    print_skipped,
    progress_bar,
    stage_errors,
    summary_table,
)

_DEFAULT = PropagateConfig()


def propagate(
    grouped: Path = typer.Argument(..., help="Grouped manifest from `choral group`."),
    graph_file: Path = typer.Argument(..., metavar="GRAPH", help="graph.npz from `choral graph`."),
    output: Path = typer.Argument(..., help="Where to write the rescored manifest, e.g. RUN/rescored.jsonl.gz."),
    params: Optional[Path] = typer.Option(None, "--params", help="YAML of parameters (as `choral tune` writes); "
                                                                 "options given explicitly below override it."),
    algorithm: Optional[str] = typer.Option(None, help="spreading (Zhou et al., soft seeds) or propagation "
                                                       "(Zhu-Ghahramani, hard clamping). "
                                                       f"[default: {_DEFAULT.algorithm}]"),
    alpha: Optional[float] = typer.Option(None, help=f"Spreading: weight of neighbours vs own prior, in [0, 1). "
                                                     f"[default: {_DEFAULT.alpha}]"),
    fusion_weight: Optional[float] = typer.Option(None, "--lambda", help="λ: weight of the teacher's log-posterior "
                                                  f"against the graph's support. [default: {_DEFAULT.fusion_weight}]"),
    temperature: Optional[float] = typer.Option(None, help="Softmax temperature of the teacher n-best posterior. "
                                                           f"[default: {_DEFAULT.temperature}]"),
    threshold_scale: Optional[float] = typer.Option(None, help="Scale the graph's learned distance threshold. "
                                                               f"[default: {_DEFAULT.threshold_scale}]"),
    weighted_edges: Optional[bool] = typer.Option(None, "--weighted-edges/--binary-edges",
                                                  help="Weight edges by exp(-d/threshold) instead of 1 "
                                                       "(paper: binary)."),
    share_candidates: Optional[bool] = typer.Option(None, "--share/--no-share",
                                                    help="Let transcripts of neighbours compete for a cut even when "
                                                         "its own n-best lacks them. [default: share]"),
    max_borrowed: Optional[int] = typer.Option(None, help="Shared transcripts a cut may take from neighbours, the "
                                                          "most supported first; bounds the teacher scoring "
                                                          f"(0: no cap). [default: {_DEFAULT.max_borrowed}]"),
    borrowed_floor: Optional[float] = typer.Option(None, help="Teacher log-posterior given to a shared transcript "
                                                              f"(no scorer). [default: {_DEFAULT.borrowed_floor}]"),
    teacher: Optional[str] = typer.Option(None, help=teacher_help(
        " whose RNN-T log-likelihood scores transcripts borrowed from neighbours (needs the cuts' audio)",
        "Without it they get --borrowed-floor.")),
    device: str = typer.Option("auto", help=DEVICE_HELP + " (the --teacher scorer)"),
    precision: str = typer.Option("auto", help=PRECISION_HELP + " (the --teacher scorer)"),
    digits: Digits = typer.Option(DEFAULT_DIGITS, help=DIGITS_HELP),
    force: bool = typer.Option(False, "--force", help="Redo the stage even if the output is up to date."),
) -> None:
    """Propagate hypothesis "goodness" from annotated and confident cuts to their neighbours and fuse it
    with the teacher: score = λ log P_teacher + (1-λ) log F.

    Writes custom.choral = [{text, confidence, teacher_text, source}] on every cut; source is
    reference (annotated), propagated, or teacher (no neighbours: the teacher's 1-best is kept).
    """
    with stage_errors("propagate", options={"fusion_weight": "--lambda"}):
        config = load_params(params) if params else PropagateConfig()
        overrides = {"algorithm": algorithm, "alpha": alpha, "fusion_weight": fusion_weight,
                     "temperature": temperature, "threshold_scale": threshold_scale,
                     "weighted_edges": weighted_edges, "share_candidates": share_candidates,
                     "borrowed_floor": borrowed_floor, "max_borrowed": max_borrowed}
        config = PropagateConfig(**{**config.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
        normalizer = TextNormalizer(digits=digits.value)
        scorer = (teacher_scorer(grouped, teacher, device=check_device_spec(device),
                                 precision=check_precision_spec(precision))
                  if teacher and config.share_candidates else None)
        with progress_bar() as progress:
            summary = propagate_manifest(grouped, graph_file, output, config, normalizer, scorer=scorer,
                                         force=force, progress=progress)
    if summary.skipped:
        print_skipped("propagate", output)
        return
    sources = summary.sources or {}
    console.print(summary_table(f"choral propagate -> {output}", [
        ("cuts", f"{summary.n_cuts:,}"),
        ("algorithm", f"{config.algorithm} (alpha {config.alpha}, lambda {config.fusion_weight}, "
                      f"T {config.temperature})"),
        ("edges used", f"{summary.n_edges:,}"),
        ("source: reference", f"{sources.get('reference', 0):,}"),
        ("source: propagated", f"{sources.get('propagated', 0):,}"),
        ("source: teacher", f"{sources.get('teacher', 0):,}"),
        ("changed from teacher 1-best", f"{summary.changed:,}"),
        ("taken from a neighbour", f"{summary.shared:,}"),
        ("  of them: nearest annotated reading", f"{summary.retrieved:,}"),
        ("time", f"{summary.seconds:.1f} s"),
    ]))
