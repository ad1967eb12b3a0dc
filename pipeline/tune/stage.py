"""The ``choral tune`` stage, as ``choral tune`` and ``choral run`` both run it.

:func:`tune_stage` is skipped when the sidecar of ``params.yaml`` says the grouped
manifest, the graph, the grid, folds and seed, the base parameters, the normaliser and
the scorer are unchanged (an anonymous scorer may change between runs, so with one the
stage always runs), and redone with ``force``.

Few annotated cuts: with fewer than :data:`MIN_ANNOTATED` (what cross-validation needs)
``params.yaml`` holds the base parameters untuned, calibration prior included. From there up to
``grid.min_annotated`` the grid is not searched (the base values hold: a handful of held-out cuts
cannot tell the grid's points apart, and a search on them moves parameters on noise; on the
protocol's development draw 6 annotated cuts did not lower the WER and raised the ECE, 12 did lower
it), but the calibration is still cross-fitted on them (``grid.calibration_fit``; the default
``scale`` moves two numbers, never the prior's ranking of candidates).

With ``tune.nearest`` (k-nearest edge counts), the whole search runs once per ``k`` on the
same folds and the ``k`` with the lowest held-out WER wins (ties: the base's own ``k``, then
the order given); ``params.json`` records every ``k``'s WER under ``nearest``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..executor.base import Executor
from ..manifest import check_readable, write_json
from ..meta import StageRecord, is_up_to_date, write_meta
from ..progress import NullProgress, Progress
from ..propagate import PropagateConfig
from ..teacher.contracts import Scorer, is_reproducible
from ..text import TextNormalizer
from .crossval import Census, TuneSummary, read_census, tune_params
from .grid import TuneConfig
from .params import report_path, write_params

# Cross-validation needs two folds of at least one annotated cut each.
MIN_ANNOTATED = 2


@dataclass(frozen=True)
class TuneStageSummary:
    """What the tune stage did: skipped, tuned (``tuned`` holds the cross-validation) or untuned."""

    params_file: Path
    skipped: bool
    tuned: TuneSummary | None = None    # the cross-validation, when it ran
    n_annotated: int = 0                # annotated cuts of the grouped manifest (not counted when skipped)
    seconds: float = 0.0

    @property
    def untuned(self) -> bool:
        """Too few annotated cuts to tune: ``params.yaml`` holds the base parameters."""
        return not self.skipped and self.tuned is None


def tune_stage(
    grouped: str | Path,
    graph_file: str | Path,
    output: str | Path,
    *,
    base: PropagateConfig = PropagateConfig(),
    grid: TuneConfig = TuneConfig(),
    normalizer: TextNormalizer = TextNormalizer(),
    scorer: Scorer | None = None,
    base_origin: str = "the run config",
    force: bool = False,
    progress: Progress = NullProgress(),
    executor: Executor | None = None,
) -> TuneStageSummary:
    """Write ``output`` (params.yaml) and its report: tuned over ``grid`` around ``base``, or ``base`` untuned
    below :data:`MIN_ANNOTATED` annotated cuts (its header names ``base_origin``); skipped when up to date.
    With an ``executor`` the folds x grid propagations run on it (the same outputs)."""
    grouped, graph_file, output = check_readable(grouped), check_readable(graph_file), Path(output)
    record = StageRecord.create("tune", inputs=[grouped, graph_file, *getattr(scorer, "inputs", [])],
                                params={"grid": grid.grid | ({"nearest": grid.nearest} if grid.nearest else {}),
                                        "base": asdict(base), "folds": grid.folds,
                                        "seed": grid.seed, "selection": grid.selection,
                                        "calibrate": grid.calibrate,
                                        "calibration_strength": grid.calibration_strength,
                                        "calibration_fit": grid.calibration_fit,
                                        "calibration_min_each": grid.calibration_min_each,
                                        "answer_strength": grid.answer_strength,
                                        "min_annotated": grid.min_annotated,
                                        "normalizer": asdict(normalizer),
                                        "scorer": getattr(scorer, "name", None)}
                                | _bounds(grid),
                                outputs=[output, report_path(output)])
    if not force and is_reproducible(scorer) and is_up_to_date(record, output):
        return TuneStageSummary(output, skipped=True)
    census = read_census(grouped)   # one light pass: the count here, the groups for the search's sample
    n_annotated = census.n_annotated
    if n_annotated < MIN_ANNOTATED:
        header = (f"# not tuned: {grouped} holds {n_annotated} annotated cut(s), tuning needs {MIN_ANNOTATED}\n"
                  f"# these are the propagate values of {base_origin}\n")
        write_params(base, output, header, {"best": asdict(base), "tuned": False, "n_annotated": n_annotated})
        write_meta(record, output)
        return TuneStageSummary(output, skipped=False, n_annotated=n_annotated)
    if n_annotated < grid.min_annotated:  # calibration only: the grid is the base values alone
        grid = replace(grid, alpha=(base.alpha,), fusion_weight=(base.fusion_weight,),
                       temperature=(base.temperature,), threshold_scale=(1.0,))
    if grid.nearest:
        tuned = _tune_nearest(grouped, graph_file, output, base=base, grid=grid, normalizer=normalizer,
                              scorer=scorer, progress=progress, executor=executor, census=census)
    else:
        tuned = tune_params(grouped, graph_file, output, base=base, grid=grid, folds=grid.folds, seed=grid.seed,
                            normalizer=normalizer, scorer=scorer, progress=progress, executor=executor,
                            census=census)
    write_meta(record, output)
    return TuneStageSummary(output, skipped=False, tuned=tuned, n_annotated=n_annotated, seconds=tuned.seconds)


def _bounds(grid: TuneConfig) -> dict:
    """The search's bounds for the sidecar, only where they differ from the defaults (run directories
    recorded before the bounds were keys still skip)."""
    default = TuneConfig()
    return {name: getattr(grid, name) for name in ("max_cuts", "sample_cuts")
            if getattr(grid, name) != getattr(default, name)}


def _tune_nearest(grouped: Path, graph_file: Path, output: Path, *, base: PropagateConfig, grid: TuneConfig,
                  normalizer: TextNormalizer, scorer: Scorer | None, progress: Progress,
                  executor: Executor | None, census: Census | None = None) -> TuneSummary:
    """One search per k-nearest count into a side file; the best k's files replace ``output`` and its report."""
    order = sorted(dict.fromkeys(grid.nearest), key=lambda k: (k != base.nearest, list(grid.nearest).index(k)))
    searches: dict[int, TuneSummary] = {}
    for k in order:
        side = output.with_name(f"{output.stem}.nearest-{k}{output.suffix}")
        searches[k] = tune_params(grouped, graph_file, side, base=replace(base, nearest=k), grid=grid,
                                  folds=grid.folds, seed=grid.seed, normalizer=normalizer, scorer=scorer,
                                  progress=progress, executor=executor, census=census)
    best_k = min(order, key=lambda k: (searches[k].best_wer, order.index(k)))
    best = searches[best_k]
    report = json.loads(best.report_file.read_text(encoding="utf-8"))
    report["nearest"] = {str(k): searches[k].best_wer for k in order}
    write_json(report, best.report_file)
    os.replace(best.params_file, output)
    os.replace(best.report_file, report_path(output))
    for k in order:
        for leftover in (searches[k].params_file, searches[k].report_file):
            leftover.unlink(missing_ok=True)
    return replace(best, params_file=output, report_file=report_path(output))
