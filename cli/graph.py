"""``choral graph``: link cuts of a group that sound alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand, TyperOption

from ..pipeline.graph import GraphConfig, build_graph, get_metric, metric_names
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


def metric_help() -> str:
    """Help of ``--metric``: every registered metric with its description."""
    described = "; ".join(f"{name}: {get_metric(name).description}" for name in metric_names())
    return f"Distance between cuts, one of {', '.join(metric_names())}. {described}."


class GraphCommand(TyperCommand):
    """``choral graph``'s command: ``--metric``'s help lists the metrics registered when help is shown."""

    # ``ctx`` is click's Context as typer passes it (its vendored click's, in recent typer; not typer.Context)
    def get_params(self, ctx: Any) -> list:
        params = super().get_params(ctx)
        for param in params:
            if param.name == "metric" and isinstance(param, TyperOption):
                param.help = metric_help()
        return params


def graph(
    grouped: Path = typer.Argument(..., help="Grouped manifest from `choral group`, e.g. RUN/grouped.jsonl.gz."),
    output: Path = typer.Argument(..., help="Where to write the graph, e.g. RUN/graph.npz."),
    threshold_file: Optional[Path] = typer.Option(None, "--threshold-file",
                                                  help="Where to write threshold.json (default: beside OUTPUT)."),
    metric: str = typer.Option("dtw-vector", help=metric_help()),
    window: Optional[int] = typer.Option(None, min=0, help="Sakoe-Chiba radius for DTW (|i-j| <= WINDOW); "
                                                           "default: unconstrained."),
    threshold: Optional[float] = typer.Option(None, help="Use this distance threshold instead of learning one."),
    confidence: float = typer.Option(0.9, min=0.0, max=1.0,
                                     help="Without annotated pairs: teacher 1-best posterior above which two cuts' "
                                          "agreeing 1-bests count as pseudo-annotations."),
    quantile: float = typer.Option(0.2, help="Last resort without any labels: link this fraction of the closest "
                                             "within-group pairs."),
    sound_nearest: int = typer.Option(GraphConfig.sound_nearest, min=0,
                                      help="In groups formed by sound (a<N>, `choral group --acoustic-neighbours`): "
                                           "also link each cut to its k nearest (0: the threshold alone)."),
    sound_reach: float = typer.Option(GraphConfig.sound_reach, min=0.0,
                                      help="... when the pair is within this multiple of the threshold "
                                           "(0: at any distance)."),
    sound_scale: str = typer.Option(GraphConfig.sound_scale,
                                    help="What the sound reaches multiply: 'threshold' (the learned one) or 'split' "
                                         "(the split between the two modes of the sound pairs' distances, when "
                                         "they have two; else the threshold)."),
    isolated_reach: float = typer.Option(GraphConfig.isolated_reach, min=0.0,
                                         help="In groups formed by words: link a cut that has no edge to its nearest "
                                              "cut when within this multiple of the threshold (0: off)."),
    threshold_prior: str = typer.Option(GraphConfig.threshold_prior,
                                        help="'split': a threshold learned from fewer than 10 positive pairs and "
                                             "below the split of the group pairs' distances into two modes is pulled "
                                             "up toward it, weight n/10 on the learned one; 'none': used as learned."),
    annotated_nearest: int = typer.Option(GraphConfig.annotated_nearest, min=0,
                                          help="Also measure every cut against its k annotated cuts most similar "
                                               "by pooled embedding, in any group (propagate's retrieval; 0: off)."),
    digits: Digits = typer.Option(DEFAULT_DIGITS, help=DIGITS_HELP),
    force: bool = typer.Option(False, "--force", help="Redo the stage even if the outputs are up to date."),
) -> None:
    """Build the similarity graph: distances between all cuts of each group, binary edges below a learned threshold.

    The threshold maximises F1 of "edge = same reference transcript" over annotated pairs of groups formed by
    shared words; threshold.json records it with precision, recall and pair counts, and which rule set it.
    """
    with stage_errors("graph"):
        config = GraphConfig(metric=metric, window=window, threshold=threshold,
                             confidence=confidence, quantile=quantile, sound_nearest=sound_nearest,
                             sound_reach=sound_reach, sound_scale=sound_scale,  # type: ignore[arg-type]
                             isolated_reach=isolated_reach, annotated_nearest=annotated_nearest,
                             threshold_prior=threshold_prior)  # type: ignore[arg-type]
        normalizer = TextNormalizer(digits=digits.value)
        with progress_bar() as progress:
            summary = build_graph(grouped, output, threshold_file, config, normalizer, force=force, progress=progress)
    if summary.skipped:
        print_skipped("graph", output)
        return
    fit = summary.fit
    assert fit is not None
    quality = "n/a"
    if fit.f1 is not None:
        quality = f"P {fit.precision:.3f}  R {fit.recall:.3f}  F1 {fit.f1:.3f}"
    console.print(summary_table(f"choral graph -> {output}", [
        ("cuts", f"{summary.n_cuts:,}"),
        ("groups", f"{summary.n_groups:,}"),
        ("pairs compared", f"{summary.n_pairs:,} ({summary.distance_seconds:.2f} s, {metric})"),
        ("threshold", f"{fit.threshold:.4g}  (rule: {fit.rule})"),
        ("labelled pairs", f"{fit.n_pairs:,} ({fit.n_positive:,} same text)"),
        ("threshold quality", quality),
        ("edges", f"{summary.n_edges:,}"),
        ("isolated cuts", f"{summary.n_isolated:,}"),
        ("time", f"{summary.seconds:.1f} s"),
    ]))
