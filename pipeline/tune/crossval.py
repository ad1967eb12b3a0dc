"""Cross-validation of ``choral tune``: choose α, λ, temperature and threshold scale on annotated cuts.

Only annotated cuts are used: the annotated cuts are split into ``folds``;
for each fold its references are hidden (those cuts become unannotated),
propagation runs with every parameter combination of the grid, and the
rescored transcripts of the hidden cuts are scored against their references.
The combination with the lowest pooled WER over all folds wins and is written
as a YAML that ``choral propagate --params`` accepts (:mod:`.params`). References of unannotated
cuts are never read here.

Only the groups of a fold's held-out cuts matter for them, so each fold
searches that sub-graph. Priors depend only on the temperature and serve every
(threshold scale, α); the solve depends on (threshold scale, α, temperature);
λ only changes the fusion, so one solve serves every λ.

With a ``scorer`` (the teacher), candidates a held-out cut borrows from its
neighbours are scored by the teacher exactly as ``choral propagate --teacher``
will score them, so the chosen λ and T fit the propagation that follows.

Selection (``selection``): ``min`` takes the combination with the lowest pooled WER. ``one-se``
(the default) guards against a noisy winner when there are few annotated cuts: with ``e_k`` the
per-cut word errors of combination ``k`` and ``k*`` the lowest total, the paired differences
``d = e_k - e_k*`` over the ``n`` held-out cuts have ``sum d`` and standard error
``SE = sqrt(n) * std(d)``; every ``k`` with ``sum d <= SE`` is statistically as good, and among them
the one closest to the base config (fewest axes changed, then lowest WER) wins. With 3-10
annotated cuts SE is large and the base values stay; with hundreds, the grid's best is taken.

Calibration (:mod:`choral.pipeline.propagate.calibrate`): with the chosen parameters the folds are
propagated once more, and each held-out cut gives feature rows of its fused winner and teacher
1-best labelled by whether they equal its reference (cross-fitting: no cut's own reference
reaches its features). The base config's coefficients (the prior) are adapted to them with
strength ``calibration_strength``, by ``calibration_fit``: ``scale`` (rescale the prior's score,
two numbers) or ``full`` (every coefficient), and written to params.yaml as ``calibration``:
``choral propagate`` decides and scores confidence with it. The rows must hold at least
``calibration_min_each`` (3) right and as many wrong candidates, else the prior is kept (params.json:
``fitted: false``): with every row wrong, as in a small pool of sentences the teacher never heard, where
a held-out reading rarely has another annotated reading of its sentence, the logistic fit is not
identified and only the prior's pull stops it. On fresh draw 17 such a fit (33 rows, none right) scaled
the prior by 0.5 and shifted it by -2.8, which held right replacements at p 0.1-0.3, under the
``unheard_confidence`` bar: its unseen-words pool gained 0.18% where the prior gives 18%.

Answer model (``answer_strength`` > 0): with the fitted beta each held-out cut is decided as ``choral propagate``
will decide it, and the base config's answer model (``propagate.answer_calibration``, by default
``calibrate.ANSWER_PRIOR``) is rescaled (``scale``, two numbers) on its answer's features and whether the answer is
its reference: the confidence written for a label is calibrated on answers, which beta's rows (every candidate
weighed) are not. It moves no label.

Confidence check: for the winning parameters the held-out cuts' confidences
are binned, and the report shows the WER of the cuts kept at each confidence
threshold (it should fall as the threshold rises).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..executor.base import Executor
from ..grouped import iter_grouped_fields
from ..manifest import check_readable
from ..progress import NullProgress, Progress
from ..propagate import PropagateConfig, read_grouped_and_graph
from ..propagate.calibrate import (
    FEATURES,
    Rule,
    answer_features,
    decide,
    describe,
    fit_calibration,
    fit_scaling,
    relative_distances,
)
from ..propagate.labels import heard_words
from ..teacher.contracts import Scorer
from ..text import TextNormalizer
from ..wer import pooled_word_errors
from .folds import CrossfitInputs, Outcome, Point, SearchInputs, crossfit_item, fold_views, plan, run_items, solve_item
from .grid import TuneConfig
from .params import write_params

CONFIDENCE_LEVELS: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
Key = tuple[float, float, float, float]   # (threshold scale, α, temperature, λ)


@dataclass
class TuneSummary:
    """The cross-validation's result: the winning parameters, their held-out WER and where they were written."""

    params_file: Path
    report_file: Path
    best: PropagateConfig
    best_wer: float
    teacher_wer: float
    n_annotated: int
    folds: int
    n_combinations: int
    confidence_curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0


MAX_TUNE_CUTS = TuneConfig().max_cuts  # cuts of annotated groups searched in full; above it tune samples groups


@dataclass(frozen=True)
class Census:
    """One light pass over a grouped manifest (groups and references only, no n-best list parsed): the
    annotated cuts and the size of every group holding one, which is all the sampling needs."""

    n_annotated: int
    sizes: dict[str, int]   # cuts per group with an annotated cut


def read_census(grouped: Path) -> Census:
    """The :class:`Census` of ``grouped``."""
    sizes: Counter[str] = Counter()
    annotated: set[str] = set()
    n_annotated = 0
    for record in iter_grouped_fields(grouped, keep=lambda group: False):
        sizes[record.group] += 1
        if record.reference is not None:
            annotated.add(record.group)
            n_annotated += 1
    return Census(n_annotated, {group: sizes[group] for group in annotated})


def choose_groups(sizes: dict[str, int], max_cuts: int | None, seed: int,
                  sample_cuts: int | None = None) -> tuple[set[str], bool]:
    """Bound the held-out work: every group of ``sizes`` (group -> cuts; the groups with an annotated cut)
    when they hold at most ``max_cuts`` cuts, else whole groups drawn in a seeded random order while they
    fit in ``sample_cuts`` (default: ``max_cuts``; whole groups: a held-out cut's neighbours are all in its
    group), and whether it sampled. A sample also switches the search to :func:`coarse_to_fine`.

    The cost of tuning is (solves) x (folds) x (cuts solved); sampling makes the last factor a constant, so
    tuning a million cuts costs what tuning ``sample_cuts`` does, and only the sampled groups' n-best lists
    are read. Two bounds, not one: a pool up to ``max_cuts`` keeps the whole grid (its choice does not
    move), while the sample above it may be smaller, since its cost is paid on every large run
    (``tune.max_cuts`` and ``tune.sample_cuts``, :class:`TuneConfig`).
    """
    limit = MAX_TUNE_CUTS if max_cuts is None else max_cuts
    if sum(sizes.values()) <= limit:
        return set(sizes), False
    bound = limit if sample_cuts is None else min(sample_cuts, limit)
    names = sorted(sizes)
    chosen: set[str] = set()
    total = 0
    for g in np.random.default_rng(seed).permutation(len(names)):
        size = sizes[names[g]]
        if total + size <= bound:
            chosen.add(names[g])
            total += size
        if total >= bound:
            break
    return chosen, True


def sample_groups(entries: list, rows: np.ndarray, max_cuts: int | None, seed: int,
                  sample_cuts: int | None = None) -> tuple[np.ndarray, bool]:
    """:func:`choose_groups` over ``rows`` (the cuts of groups with an annotated cut, in manifest order):
    the rows of the chosen groups, and whether it sampled."""
    sizes = Counter(str(entries[i].group) for i in rows)
    chosen, bounded = choose_groups(dict(sizes), max_cuts, seed, sample_cuts)
    if not bounded:
        return rows, False
    return np.asarray([i for i in rows if entries[i].group in chosen], dtype=rows.dtype), True


def coarse_to_fine(start: Point, grid: TuneConfig, solve: Callable[[list[Point]], None], edits: dict) -> None:
    """Search the (threshold scale, α, temperature) grid one axis at a time instead of all of it.

    From the grid point nearest ``start``, every value of one axis is solved with the other two fixed, the
    best (lowest pooled edits over λ, which is free: one solve serves every λ) is kept, and the axes are
    swept in turn until a full sweep changes nothing: about 1 + 2 (3 - 1) solves per sweep on the default
    3 x 3 x 3 grid, 7-11 in all instead of 27. ``solve(points)`` adds the points' edits to ``edits``; a
    sweep's unsolved points go to it together (in the sweep's order), so an executor solves them at once.
    """
    axes = (grid.threshold_scale, grid.alpha, grid.temperature)

    def nearest(values: tuple[float, ...], target: float) -> float:
        return min(values, key=lambda v: (abs(v - target), v))

    current: Point = (nearest(axes[0], start[0]), nearest(axes[1], start[1]), nearest(axes[2], start[2]))
    done: set[Point] = set()

    def cost(point: Point) -> int:
        return min(v for k, v in edits.items() if k[:3] == point)

    changed = True
    while changed:
        changed = False
        for axis, values in enumerate(axes):
            points: list[Point] = [current[:axis] + (v,) + current[axis + 1:] for v in values]  # type: ignore
            pending = list(dict.fromkeys(p for p in points if p not in done))
            if pending:
                solve(pending)
                done.update(pending)
            best = min(points, key=lambda p: (cost(p), p != current))
            if best != current:
                current, changed = best, True


def _fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % folds
    return fold


def tune_params(
    grouped: str | Path,
    graph_file: str | Path,
    output: str | Path,
    *,
    base: PropagateConfig = PropagateConfig(),
    grid: TuneConfig = TuneConfig(),
    folds: int = 5,
    seed: int = 0,
    normalizer: TextNormalizer = TextNormalizer(),
    scorer: Scorer | None = None,
    progress: Progress = NullProgress(),
    max_cuts: int | None = None,
    executor: Executor | None = None,
    census: Census | None = None,
) -> TuneSummary:
    """Cross-validate the grid on annotated cuts; write the best parameters (YAML) and a report (JSON).

    ``max_cuts`` (default ``grid.max_cuts``) and ``grid.sample_cuts`` bound the held-out work: see
    :func:`choose_groups` (``census``: the manifest's :class:`Census`, when the caller has read it). With an
    ``executor`` the folds x grid propagations and the calibration's folds run on it (:mod:`.folds`); the
    selection and the fit stay here, and the outputs are the same as without one."""
    grouped, graph_file, output = check_readable(grouped), check_readable(graph_file), Path(output)
    started = time.perf_counter()
    census = read_census(grouped) if census is None else census
    chosen, bounded = choose_groups(census.sizes, grid.max_cuts if max_cuts is None else max_cuts, seed,
                                    grid.sample_cuts)
    sub_entries, graph = read_grouped_and_graph(grouped, graph_file, normalizer, progress, groups=chosen)
    rows = np.arange(len(sub_entries))   # the searched cuts, in manifest order: the graph is over them alone
    annotated_rows = np.array([k for k, e in enumerate(sub_entries) if e.reference is not None], dtype=np.int64)
    folds = min(folds, len(annotated_rows))
    if folds < 2:
        raise InputError(grouped, f"tuning needs at least 2 annotated cuts, found {len(annotated_rows)}")
    fold = _fold_of(len(annotated_rows), folds, seed)
    references = [sub_entries[k].reference or "" for k in annotated_rows]

    solves = [(scale, alpha, temperature) for temperature in grid.temperature
              for scale, alpha in itertools.product(grid.threshold_scale, grid.alpha)]
    progress.task(f"cross-validating {grid.size} combinations x {folds} folds"
                  + (f" (coarse to fine, {len(rows):,} sampled cuts)" if bounded else ""),
                  None if bounded else len(solves) * folds)
    # errors[(scale, alpha, temperature, lambda)] = edits pooled over folds
    edits: dict[Key, int] = {}
    per_cut: dict[Key, np.ndarray] = {}   # word errors per annotated cut
    slot = {int(k): i for i, k in enumerate(annotated_rows)}
    hypotheses: dict[Key, list[tuple[int, str, float]]] = {}
    teacher_edits, total_words = pooled_word_errors(references, [sub_entries[k].hypotheses[0] for k in annotated_rows])
    adjacency_of = {scale: graph.adjacency(graph.threshold * scale * base.threshold_scale,
                                           weighted=base.weighted_edges, nearest=base.nearest,
                                           threshold_edges=not base.nearest_only)[rows][:, rows]
                    for scale in grid.threshold_scale}
    views = fold_views(sub_entries, annotated_rows, fold, folds)
    heard = heard_words(sub_entries)  # a fold's batch holds only its groups: the teacher says more than that
    inputs = SearchInputs(base, tuple(grid.fusion_weight), normalizer, adjacency_of, views, heard)
    shared = inputs if executor is None else executor.put(inputs)  # in the object store once, on Ray
    workers = 1 if executor is None else executor.workers

    def solve(points: list[Point]) -> None:
        """Cross-validate the (threshold scale, α, temperature) ``points`` over every fold, for every λ, and merge
        the answers as one point after the other, fold after fold (the order of a serial loop)."""
        items = plan(points, folds, workers)
        answers = run_items(executor, solve_item, shared, items, scorer,
                            lambda item: progress.advance(len(item.points)))
        outcome: dict[tuple[int, Point], list[Outcome]] = {}
        for item, answer in zip(items, answers):
            for (scale, alpha), outcomes in zip(item.points, answer):
                outcome[item.fold, (scale, alpha, item.temperature)] = outcomes
        for point in points:
            for f, view in enumerate(views):
                for weight, result in zip(grid.fusion_weight, outcome[f, point]):
                    key = (*point, weight)
                    errors = per_cut.setdefault(key, np.zeros(len(annotated_rows)))
                    for k, e in zip(view.held_out, result.errors):
                        errors[slot[int(k)]] = e
                    edits[key] = edits.get(key, 0) + result.edits
                    hypotheses.setdefault(key, []).extend(result.decisions)

    if bounded:
        coarse_to_fine((1.0, base.alpha, base.temperature), grid, solve, edits)
    else:
        solve(solves)

    default_key = (1.0, base.alpha, base.temperature, base.fusion_weight)
    best_key, lowest_key = select_key(per_cut, default_key, grid.selection)
    scale, alpha, temperature, weight = best_key
    best = replace(base, alpha=alpha, temperature=temperature, fusion_weight=weight,
                   threshold_scale=base.threshold_scale * scale)
    calibration: dict = {"fitted": False, "n_rows": 0}
    if grid.calibrate and base.calibrate:
        x, y, held = _crossfit_rows(sub_entries, annotated_rows, fold, folds, graph, rows, best, scorer, executor,
                                    heard)
        n_correct = int(np.sum(y))
        identified = min(n_correct, len(y) - n_correct) >= grid.calibration_min_each
        fit = fit_scaling if grid.calibration_fit == "scale" else fit_calibration
        beta = fit(x, y, base.calibration, grid.calibration_strength) if identified else np.asarray(base.calibration)
        best = replace(best, calibration=tuple(round(float(b), 6) for b in beta),
                       prior_calibration=tuple(base.calibration))
        calibration = {"fitted": identified, "n_rows": int(len(y)), "n_correct": n_correct,
                       "fit": grid.calibration_fit, "strength": grid.calibration_strength,
                       "prior": describe(base.calibration),
                       "beta": describe(beta), "features": list(FEATURES),
                       "rows": [[round(float(v), 5) for v in row] + [int(t)] for row, t in zip(x, y)]}
        x_answer, right = answer_rows(held, Rule.of(best))
        fitted = grid.answer_strength > 0 and bool(best.answer_calibration)
        if fitted:
            answer_beta = fit_scaling(x_answer, right, best.answer_calibration, grid.answer_strength)
            best = replace(best, answer_calibration=tuple(round(float(b), 6) for b in answer_beta))
        calibration["answers"] = {"fitted": fitted, "strength": grid.answer_strength,
                                  "n_answers": int(len(right)), "n_right": int(np.sum(right)),
                                  "beta": describe(best.answer_calibration) if best.answer_calibration else None,
                                  "rows": [[round(float(v), 5) for v in row] + [int(r)]
                                           for row, r in zip(x_answer, right)]}
    curve = _confidence_curve(hypotheses[best_key], {int(k): r for k, r in zip(annotated_rows, references)})
    best_wer, teacher_wer = edits[best_key] / max(total_words, 1), teacher_edits / max(total_words, 1)
    header = (f"# choral propagate parameters chosen by `choral tune` on {grouped}\n"
              f"# {folds}-fold cross-validation over annotated cuts; held-out WER {best_wer:.4f}\n")
    report_file = write_params(best, output, header, {
        "best": asdict(best),
        "best_wer": best_wer,
        "teacher_wer": teacher_wer,
        "n_annotated": int(len(annotated_rows)),
        "n_words": int(total_words),
        "folds": folds,
        "search": ({"sampled_cuts": int(len(rows)), "solved_points": len({k[:3] for k in edits}),
                    "grid_points": len(solves)} if bounded else "full"),
        "selection": grid.selection,
        "lowest_wer_params": dict(zip(("threshold_scale", "alpha", "temperature", "fusion_weight"), lowest_key)),
        "lowest_wer": edits[lowest_key] / max(total_words, 1),
        "calibration": calibration,
        "confidence_curve": curve,
        "grid": [{"threshold_scale": k[0], "alpha": k[1], "temperature": k[2], "fusion_weight": k[3],
                  "wer": v / max(total_words, 1)} for k, v in sorted(edits.items(), key=lambda kv: kv[1])],
    })
    return TuneSummary(params_file=output, report_file=report_file, best=best, best_wer=best_wer,
                       teacher_wer=teacher_wer, n_annotated=int(len(annotated_rows)), folds=folds,
                       n_combinations=grid.size, confidence_curve=curve, seconds=time.perf_counter() - started)



def select_key(per_cut: dict[Key, np.ndarray], default_key: Key, selection: str) -> tuple[Key, Key]:
    """The chosen grid point and the lowest-error one (the module docstring's ``min`` / ``one-se`` rules)."""
    totals = {k: float(v.sum()) for k, v in per_cut.items()}
    lowest = min(totals, key=lambda k: (totals[k], k != default_key))
    if selection == "min":
        return lowest, lowest
    n = len(per_cut[lowest])
    within = []
    for key, errors in per_cut.items():
        difference = errors - per_cut[lowest]
        spread = float(np.std(difference, ddof=1)) * np.sqrt(n) if n > 1 else 0.0
        if difference.sum() <= spread + 1e-9:
            within.append(key)
    changed = {k: sum(a != b for a, b in zip(k, default_key)) for k in within}
    return min(within, key=lambda k: (changed[k], totals[k], k)), lowest


def _crossfit_rows(entries: list, annotated_rows: np.ndarray, fold: np.ndarray, folds: int, graph,
                   rows: np.ndarray, config: PropagateConfig, scorer: Scorer | None,
                   executor: Executor | None = None,
                   heard: frozenset[str] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """Calibration rows of every annotated cut, propagated with its fold's references hidden (one item per fold,
    concatenated in fold order), and each cut's candidates with whether its winner and 1-best are right;
    ``heard``: the search's vocabulary (computed from ``entries`` when not given)."""
    threshold = graph.threshold * config.threshold_scale
    adjacency = graph.adjacency(threshold, weighted=config.weighted_edges, nearest=config.nearest)[rows][:, rows]
    distances = relative_distances(graph.adjacency(threshold, weighted=True, nearest=config.nearest)[rows][:, rows])
    inputs = CrossfitInputs(list(entries), adjacency, distances, config,
                            [annotated_rows[fold == f] for f in range(folds)],
                            heard_words(entries) if heard is None else heard)
    answers = run_items(executor, crossfit_item, inputs, list(range(folds)), scorer, lambda _: None)
    features = [x for part, _, _ in answers for x in part]
    labels = [y for _, part, _ in answers for y in part]
    held = [h for _, _, part in answers for h in part]
    return (np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURES)), np.asarray(labels, dtype=np.float64),
            held)


def answer_rows(held: list, rule: Rule) -> tuple[np.ndarray, np.ndarray]:
    """Each held-out cut decided under ``rule`` (the fitted beta, the config's decision): its answer's feature row
    and whether that answer is its reference (the answer model's rows)."""
    x, right = [], []
    for found, winner_right, best_right in held:
        decision = decide(found, rule)
        x.append(answer_features(found, decision))
        right.append(winner_right if decision.replaced else best_right)
    return np.asarray(x, dtype=np.float64).reshape(-1, len(FEATURES)), np.asarray(right, dtype=np.float64)


def _confidence_curve(held_out: list[tuple[int, str, float]], references: dict[int, str]) -> list[dict]:
    """WER and kept fraction of held-out cuts at rising confidence thresholds."""
    curve = []
    for level in CONFIDENCE_LEVELS:
        kept = [(references[k], text) for k, text, confidence in held_out if confidence >= level]
        errors, words = pooled_word_errors([r for r, _ in kept], [t for _, t in kept])
        curve.append({"min_confidence": level, "kept_cuts": len(kept),
                      "kept_fraction": len(kept) / max(len(held_out), 1),
                      "wer": errors / words if words else None})
    return curve
