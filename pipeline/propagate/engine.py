"""The propagation engine: spread good hypotheses across the graph and fuse with the teacher.

For every cut ``i`` and label ``h`` of its group (:mod:`.labels`):

1. Propagation gives ``F[i, h]``, how strongly the graph neighbourhood of ``i``
   supports ``h``: label spreading (Zhou et al.) or label propagation with hard
   clamping (Zhu & Ghahramani), from :mod:`choral.kernels.propagation`.
   Annotated cuts are the seeds; with ``algorithm="propagation"`` unannotated
   cuts whose teacher 1-best posterior reaches ``clamp_confidence`` are
   clamped too, so the fully unsupervised case still has sources.
2. Fusion with the teacher::

       score(h, i) = λ · log P_teacher(h | i) + (1 − λ) · log F̂[i, h]

   with ``F̂`` the row-normalised ``F``. The answer is the best-scoring label;
   its confidence is its share of ``exp(score)`` over the cut's candidates.
3. Candidate sharing: a label that reached ``i`` through the graph but is not
   in ``i``'s own n-best is a candidate too. Its teacher term comes from a
   pluggable ``scorer(cut_id, texts) -> log-likelihoods`` (the RNN-T scorer),
   renormalised with the cut's own n-best scores; without a scorer it gets
   ``borrowed_floor`` as its teacher log-posterior.

Annotated cuts keep their reference (``source="reference"``); cuts without
any edge keep the teacher's 1-best (``source="teacher"``); the rest are
``source="propagated"``.

Pure computation on :class:`~.labels.CutEntry` lists and an adjacency matrix in
their order (no file I/O). :func:`rescore` runs it all; ``choral tune`` reuses the
steps: :func:`batch_priors` once per temperature, :func:`propagate_batch` once per
solve, :func:`fuse` once per λ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ...kernels.propagation import label_propagation, label_spreading, normalize_rows
from ..errors import ChoralError
from ..fields import CutResult
from ..progress import NullProgress, Progress
from ..teacher.contracts import Scorer
from ..teacher.scoring import prefetch
from .config import PropagateConfig
from .labels import CutEntry, GroupLabels, build_group_labels, log_posterior, own_log_posteriors, prior_row

_EPS = 1e-12
# Relative residual at which CG stops: decisions compare log-supports, far coarser than this.
_CG_TOL = 1e-6


def _batches(entries: Sequence[CutEntry], batch_cuts: int) -> Iterable[list[int]]:
    """Indices of whole groups, packed into batches of about ``batch_cuts`` cuts."""
    by_group: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        by_group.setdefault(entry.group, []).append(index)
    batch: list[int] = []
    for members in by_group.values():
        batch.extend(members)
        if len(batch) >= batch_cuts:
            yield batch
            batch = []
    if batch:
        yield batch


def rescore(
    entries: Sequence[CutEntry],
    adjacency: sp.csr_matrix,
    config: PropagateConfig = PropagateConfig(),
    scorer: Scorer | None = None,
    progress: Progress = NullProgress(),
    finish: Finisher | None = None,
) -> list[CutResult]:
    """Propagate and fuse for every cut; ``adjacency`` is in the order of ``entries``.

    ``finish(batch, indices, results)``, when given, revises each batch's results (``indices`` are the
    batch's rows in ``entries``): the calibrated decision of :mod:`.calibrate`.
    """
    if adjacency.shape != (len(entries), len(entries)):
        raise ChoralError(f"graph has {adjacency.shape[0]} cuts, manifest has {len(entries)}")
    results: list[CutResult | None] = [None] * len(entries)
    degree = np.diff(adjacency.indptr)
    for batch in _batches(entries, config.batch_cuts):
        for index, result in zip(batch, _rescore_batch([entries[i] for i in batch], adjacency[batch][:, batch],
                                                       degree[batch], config, scorer, finish, batch)):
            results[index] = result
        progress.advance(len(batch))
    return [r for r in results if r is not None]


@dataclass
class BatchSupport:
    """Propagation results for a batch of whole groups, before fusion (what :func:`fuse` decides from)."""

    entries: list[CutEntry]                # the batch's cuts; row r of every array is entries[r]
    labels_of: dict[str, GroupLabels]      # each group's labels: column k of a row is label k of its group
    support: np.ndarray      # row-normalised F
    teacher: np.ndarray      # teacher log-posterior per label column (-inf: not a candidate)
    degree: np.ndarray       # edges per cut (0: the cut keeps the teacher's 1-best)


# revises a batch's fused results: (batch, its rows in the whole entry list, results) -> results
Finisher = Callable[["BatchSupport", list[int], list[CutResult]], list[CutResult]]


@dataclass
class BatchPriors:
    """Label sets, prior matrix Y and teacher terms of a batch: they depend on T, not on α or the graph."""

    labels_of: dict[str, GroupLabels]      # each group's labels, as in :class:`BatchSupport`
    prior: np.ndarray        # Y: one-hot reference (annotated) or teacher posterior over the own n-best
    teacher: np.ndarray      # teacher log-posterior of the own n-best per label column (-inf elsewhere)
    annotated: np.ndarray    # rows with a reference: the seeds


def batch_priors(entries: list[CutEntry], config: PropagateConfig) -> BatchPriors:
    """Build every group's labels and each cut's prior row and teacher log-posteriors."""
    groups: dict[str, list[int]] = {}
    for row, entry in enumerate(entries):
        groups.setdefault(entry.group, []).append(row)
    labels_of = {g: build_group_labels([entries[r] for r in rows], config.temperature, config.max_labels)
                 for g, rows in groups.items()}
    width = max(len(labels.texts) for labels in labels_of.values())
    n = len(entries)
    prior = np.zeros((n, width))
    teacher = np.full((n, width), -np.inf)
    for row, entry in enumerate(entries):
        labels = labels_of[entry.group]
        own = own_log_posteriors(entry, labels, config.temperature)
        prior[row] = prior_row(entry, labels, own, width)
        for column, logp in own.items():
            teacher[row, column] = logp
    annotated = np.array([e.reference is not None for e in entries])
    return BatchPriors(labels_of, prior, teacher, annotated)


def propagate_batch(entries: list[CutEntry], adjacency: sp.csr_matrix, degree: np.ndarray,
                    config: PropagateConfig, scorer: Scorer | None = None,
                    priors: BatchPriors | None = None, score_rows: Sequence[int] | None = None) -> BatchSupport:
    """Run the propagation kernel over a batch of whole groups and collect teacher terms (with sharing).

    ``adjacency`` and ``degree`` (its edges per row) are in the order of ``entries``.
    ``priors`` (from :func:`batch_priors` with the same temperature) may be reused across α values.
    ``score_rows`` limits the scorer to the rows whose transcripts will be decided (tuning
    decides only held-out cuts; the teacher terms of other rows never reach the support).
    """
    if priors is None:
        priors = batch_priors(entries, config)
    labels_of, prior, annotated = priors.labels_of, priors.prior, priors.annotated
    teacher = priors.teacher.copy()

    clamped = annotated
    if config.algorithm == "propagation":
        top = np.array([np.exp(log_posterior(e.scores, config.temperature)[0]) for e in entries])
        clamped = annotated | (top >= config.clamp_confidence)
    support = np.zeros_like(prior)
    # Groups never share edges, so groups with few labels are solved on narrow matrices of their own.
    widths = np.array([len(labels_of[e.group].texts) for e in entries])
    buckets = np.ceil(np.log2(np.maximum(widths, 1))).astype(np.int64)
    for bucket in np.unique(buckets):
        rows = np.flatnonzero(buckets == bucket)
        width = int(widths[rows].max())
        sub_adjacency = adjacency[rows][:, rows]
        sub_prior = prior[rows, :width]
        if config.algorithm == "spreading":
            solved = label_spreading(sub_adjacency, sub_prior, config.alpha, tol=_CG_TOL)
        else:
            solved = label_propagation(sub_adjacency, sub_prior, clamped[rows], tol=_CG_TOL)
        support[rows, :width] = solved
    # CG solves to a tolerance, so a support that is 0 in exact arithmetic may come out slightly
    # negative; its log would be NaN in the fusion
    support = normalize_rows(np.maximum(support, 0.0))

    if config.share_candidates:
        borrowed = borrowed_candidates(support, teacher, annotated, config)
        if scorer is None:
            teacher[borrowed] = config.borrowed_floor
            return BatchSupport(entries, labels_of, support, teacher, np.asarray(degree))
        rows = np.flatnonzero(borrowed.any(axis=1))
        if score_rows is not None:
            unscored = np.setdiff1d(rows, np.asarray(score_rows, dtype=np.int64))
            rows = np.setdiff1d(rows, unscored)
            teacher[unscored] = np.where(borrowed[unscored], config.borrowed_floor, teacher[unscored])
        prefetch(scorer, [(entries[row].cut_id, [labels_of[entries[row].group].originals[c]
                                                 for c in np.flatnonzero(borrowed[row])]) for row in rows])
        for row in rows:
            columns = np.flatnonzero(borrowed[row])
            teacher[row] = _teacher_with_borrowed(entries[row], labels_of[entries[row].group], teacher[row],
                                                  columns, config, scorer)
    return BatchSupport(entries, labels_of, support, teacher, np.asarray(degree))


def borrowed_candidates(support: np.ndarray, teacher: np.ndarray, annotated: np.ndarray,
                        config: PropagateConfig) -> np.ndarray:
    """Mask of the labels each cut borrows: outside its own n-best, with support >= ``share_min``,
    at most ``max_borrowed`` per cut (the most supported).

    Annotated cuts answer with their reference and borrow nothing. The cap bounds the teacher
    scoring that follows (one forward pass per borrowed text); the labels it drops carry the
    least support, so they rarely win the fusion.
    """
    borrowed = (support >= config.share_min) & np.isneginf(teacher) & ~annotated[:, None]
    if config.max_borrowed:
        crowded = np.flatnonzero(borrowed.sum(axis=1) > config.max_borrowed)
        for row in crowded:
            columns = np.flatnonzero(borrowed[row])
            # stable sort: equal support keeps the lower column (the group's label order)
            dropped = columns[np.argsort(-support[row, columns], kind="stable")[config.max_borrowed:]]
            borrowed[row, dropped] = False
    return borrowed


def fuse(batch: BatchSupport, rows: Iterable[int], fusion_weight: float, config: PropagateConfig) -> list[CutResult]:
    """Decide the transcripts of ``rows`` of a batch with teacher weight λ = ``fusion_weight``.

    ``config`` supplies the temperature of the confidence of cuts that keep the teacher's 1-best;
    its own ``fusion_weight`` is not used, so one :class:`BatchSupport` serves every λ.
    """
    results = []
    for row in rows:
        teacher = batch.teacher[row]
        with np.errstate(divide="ignore", invalid="ignore"):
            fused = fusion_weight * teacher + (1 - fusion_weight) * np.log(batch.support[row] + _EPS)
        fused[np.isneginf(teacher)] = -np.inf
        entry = batch.entries[row]
        results.append(_decide(entry, batch.labels_of[entry.group], fused, int(batch.degree[row]), config))
    return results


def _rescore_batch(entries: list[CutEntry], adjacency: sp.csr_matrix, degree: np.ndarray,
                   config: PropagateConfig, scorer: Scorer | None, finish: Finisher | None = None,
                   indices: Sequence[int] = ()) -> list[CutResult]:
    batch = propagate_batch(entries, adjacency, degree, config, scorer)
    results = fuse(batch, range(len(entries)), config.fusion_weight, config)
    return results if finish is None else finish(batch, list(indices), results)


def _teacher_with_borrowed(entry: CutEntry, labels: GroupLabels, teacher_row: np.ndarray, columns: np.ndarray,
                           config: PropagateConfig, scorer: Scorer | None) -> np.ndarray:
    """Teacher log-posteriors over the cut's own n-best plus labels borrowed from neighbours."""
    row = teacher_row.copy()
    if scorer is None:
        row[columns] = config.borrowed_floor
        return row
    borrowed_scores = np.asarray(scorer(entry.cut_id, [labels.originals[c] for c in columns]), dtype=np.float64)
    if borrowed_scores.shape != (len(columns),):
        raise ChoralError(f"scorer returned {borrowed_scores.shape} scores for {len(columns)} texts")
    own_columns = np.flatnonzero(np.isfinite(teacher_row))
    own_best: dict[int, float] = {}
    for text, score in zip(entry.hypotheses, entry.scores):
        column = labels.index.get(text)
        if column is not None:
            own_best[column] = float(np.logaddexp(own_best[column], score)) if column in own_best else float(score)
    all_columns = np.concatenate([own_columns, columns])
    all_scores = np.concatenate([[own_best[int(c)] for c in own_columns], borrowed_scores])
    row[all_columns] = log_posterior(all_scores, config.temperature)
    return row


def _decide(entry: CutEntry, labels: GroupLabels, fused_row: np.ndarray, degree: int,
            config: PropagateConfig) -> CutResult:
    """One cut's answer: its reference, the teacher's 1-best (no edge), or the best fused label."""
    teacher_text = entry.originals[0]
    if entry.reference is not None:
        return CutResult(entry.reference_original or entry.reference, 1.0, teacher_text, "reference")
    if degree == 0 or not np.isfinite(fused_row).any():
        confidence = float(np.exp(log_posterior(entry.scores, config.temperature)[0]))
        return CutResult(teacher_text, confidence, teacher_text, "teacher")
    best = int(np.argmax(fused_row))
    finite = fused_row[np.isfinite(fused_row)]
    confidence = float(1.0 / np.exp(finite - fused_row[best]).sum())
    text = labels.texts[best]
    original = teacher_text if text == entry.hypotheses[0] else labels.originals[best]
    return CutResult(original, confidence, teacher_text, "propagated")
