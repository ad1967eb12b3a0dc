"""The cross-validation's units of work: pure functions of shared inputs, run here or on an executor.

``choral tune``'s cost is (grid points) x (folds) propagations of a fold's held-out groups. Each of them
depends only on the fold, the point and the inputs every one shares (the searched cuts, the graph's
adjacency at each threshold scale, the folds' held-out rows), so :func:`solve_item` takes one fold at one
temperature over a batch of (threshold scale, α) points (one :func:`~choral.pipeline.propagate.batch_priors`
serves the batch, one solve serves every λ) and returns its held-out cuts' word errors and decisions;
:func:`crossfit_item` takes one fold's calibration rows. The driver (:mod:`.crossval`) sends the shared
inputs once (:meth:`~choral.pipeline.executor.base.Executor.put`), the items to the executor, and merges
the answers in the order of its serial loop, so the choice, the report and the calibration are the same
whichever executor ran them. With a teacher scorer the items go to stateful workers, each holding its own
scorer (one teacher per worker, not per item).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from ..executor.base import Executor
from ..executor.local import LocalExecutor
from ..propagate import BatchPriors, CutEntry, PropagateConfig, batch_priors, fuse, propagate_batch
from ..propagate.calibrate import candidates, training_rows
from ..teacher.contracts import Scorer
from ..text import TextNormalizer
from ..wer import word_errors

Point = tuple[float, float, float]   # (threshold scale, α, temperature)


@dataclass(frozen=True)
class FoldView:
    """One fold as its propagations see it: the held-out rows (of the searched cuts) and their references, the
    rows of the groups they are in (``local``), those rows' entries with the held-out references hidden, and
    the held-out cuts' positions among them."""

    held_out: np.ndarray
    references: list[str]
    local: np.ndarray
    entries: list[CutEntry]
    positions: list[int]


def fold_view(entries: Sequence[CutEntry], held_out: np.ndarray) -> FoldView:
    """The :class:`FoldView` of the held-out rows ``held_out``: only the groups they are in influence them."""
    hidden = set(int(k) for k in held_out)
    fold_groups = {entries[k].group for k in held_out}
    local = np.array([k for k, e in enumerate(entries) if e.group in fold_groups], dtype=np.int64)
    position = {int(k): i for i, k in enumerate(local)}
    local_entries = [replace(entries[k], reference=None, reference_original=None) if int(k) in hidden
                     else entries[k] for k in local]
    return FoldView(held_out, [entries[k].reference or "" for k in held_out], local, local_entries,
                    [position[int(k)] for k in held_out])


def fold_views(entries: Sequence[CutEntry], annotated_rows: np.ndarray, fold: np.ndarray,
               folds: int) -> list[FoldView]:
    """Every fold's :class:`FoldView` (:func:`fold_view`)."""
    return [fold_view(entries, annotated_rows[fold == f]) for f in range(folds)]


@dataclass
class SearchInputs:
    """What every :func:`solve_item` reads, sent once: the base config, the λ values, the normaliser, the
    adjacency over the searched cuts at each threshold scale, and the folds. ``priors`` caches
    (fold, temperature) -> priors in the process that holds this object (a local run reuses them across the
    coarse-to-fine sweeps; a Ray worker process keeps its copy of the inputs across its tasks and fills its own
    cache, :func:`choral.pipeline.executor.ray_backend._resolve`)."""

    base: PropagateConfig
    fusion_weights: tuple[float, ...]
    normalizer: TextNormalizer
    adjacency: dict[float, sp.csr_matrix]
    folds: list[FoldView]
    heard: frozenset[str] | None = None   # the words of every searched cut's n-best: what the teacher says
    priors: dict[tuple[int, float], BatchPriors] = field(default_factory=dict)


@dataclass(frozen=True)
class SolveItem:
    """One fold at one temperature over a batch of (threshold scale, α) points."""

    fold: int
    temperature: float
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Outcome:
    """One (point, λ) on one fold: each held-out cut's word errors, their pooled edits and its decisions
    ``(row, normalised text, confidence)``, in the fold's held-out order."""

    errors: list[int]
    edits: int
    decisions: list[tuple[int, str, float]]


def solve_item(scorer: Scorer | None, inputs: SearchInputs, item: SolveItem) -> list[list[Outcome]]:
    """For each point of ``item`` (in order), the fold's :class:`Outcome` under every λ (in order)."""
    view = inputs.folds[item.fold]
    config_t = replace(inputs.base, temperature=item.temperature)
    priors = inputs.priors.get((item.fold, item.temperature))
    if priors is None:
        priors = inputs.priors[item.fold, item.temperature] = batch_priors(view.entries, config_t)
    answers = []
    for scale, alpha in item.points:
        adjacency = inputs.adjacency[scale][view.local][:, view.local]
        config = replace(config_t, alpha=alpha)
        batch = propagate_batch(view.entries, adjacency, np.diff(adjacency.indptr), config, scorer=scorer,
                                priors=priors, score_rows=view.positions, heard=inputs.heard)
        outcomes = []
        scored: dict[tuple[int, str], int] = {}   # (held-out slot, text) -> word errors: λs often agree
        for weight in inputs.fusion_weights:
            results = fuse(batch, view.positions, weight, config)
            texts = [inputs.normalizer(r.text) for r in results]
            errors = []
            for i, (reference, text) in enumerate(zip(view.references, texts)):
                if (i, text) not in scored:
                    scored[i, text] = word_errors(reference, text)
                errors.append(scored[i, text])
            outcomes.append(Outcome(errors, sum(errors),  # pooled edits are the sum of the cuts'
                                    [(int(k), text, r.confidence)
                                     for k, text, r in zip(view.held_out, texts, results)]))
        answers.append(outcomes)
    return answers


def plan(points: Sequence[Point], folds: int, workers: int) -> list[SolveItem]:
    """The items of ``points`` over every fold: by (fold, temperature), each batch of points split only as far
    as needed for about two items per worker (a task solves several points, not one, and each split may cost a
    worker one more :func:`~choral.pipeline.propagate.batch_priors`)."""
    by_temperature: dict[float, list[tuple[float, float]]] = {}
    for scale, alpha, temperature in points:
        by_temperature.setdefault(temperature, []).append((scale, alpha))
    groups = folds * len(by_temperature)
    splits = max(1, math.ceil(2 * workers / max(groups, 1))) if workers > 1 else 1
    items: list[SolveItem] = []
    for f in range(folds):
        for temperature, pairs in by_temperature.items():
            size = max(1, math.ceil(len(pairs) / splits))
            items.extend(SolveItem(f, temperature, tuple(pairs[i: i + size])) for i in range(0, len(pairs), size))
    return items


def run_items(executor: Executor | None, fn: Callable[[Scorer | None, Any, Any], Any], shared: Any,
              items: Sequence[Any], scorer: Scorer | None, advance: Callable[[Any], None]) -> list[Any]:
    """``[fn(scorer, shared, item) ...]`` in item order: here one at a time (``advance(item)`` after each), or
    on ``executor`` (plain tasks without a scorer; stateful workers, each with its own copy, with one)."""
    if executor is None or isinstance(executor, LocalExecutor):
        answers = []
        for item in items:
            answers.append(fn(scorer, shared, item))
            advance(item)
        return answers
    if scorer is None:
        answers = executor.map(partial(fn, None), items, shared)
    else:
        answers = executor.map_stateful(partial(_same, scorer), fn, items, shared)
    for item in items:
        advance(item)
    return answers


def _same(value: Any) -> Any:
    return value


@dataclass
class CrossfitInputs:
    """What every :func:`crossfit_item` reads: the searched cuts, the adjacency with the chosen parameters and
    its relative distances, the chosen config and each fold's held-out rows."""

    entries: list[CutEntry]
    adjacency: sp.csr_matrix
    distances: sp.csr_matrix
    config: PropagateConfig
    held_out: list[np.ndarray]
    heard: frozenset[str] | None = None   # as :attr:`SearchInputs.heard`


def crossfit_item(scorer: Scorer | None, inputs: CrossfitInputs, fold: int) -> tuple[list, list, list]:
    """Calibration feature rows and labels of one fold's held-out cuts, propagated with their references hidden
    (:func:`~choral.pipeline.propagate.calibrate.training_rows`), and per cut its candidates with whether its
    winner and its 1-best are right (what the answer model is fitted on once the rows have fitted beta)."""
    entries, config = inputs.entries, inputs.config
    held_out = inputs.held_out[fold]
    view = fold_view(entries, held_out)
    local_adjacency = inputs.adjacency[view.local][:, view.local]
    local_distances = inputs.distances[view.local][:, view.local]
    local_held_out = view.positions
    batch = propagate_batch(view.entries, local_adjacency, np.diff(local_adjacency.indptr), config,
                            scorer=scorer, score_rows=local_held_out, heard=inputs.heard)
    features: list = []
    labels: list = []
    answers: list = []
    for k, r in zip(held_out, local_held_out):
        found = candidates(batch, local_adjacency, r, config.fusion_weight, local_distances)
        reference = entries[k].reference
        if found is None or reference is None:
            continue
        texts = batch.texts_of(r)[0]
        x, y = training_rows(found, texts, reference)
        features.extend(x)
        labels.extend(y)
        answers.append((found, texts[found.winner] == reference, texts[found.one_best] == reference))
    return features, labels, answers
