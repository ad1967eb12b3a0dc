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

4. Word-level consensus (``consensus = k > 0``): the ``consensus_inputs`` most
   supported transcripts of a cut's row (own n-best and borrowed alike) are aligned
   into a confusion network weighted by their support (:mod:`.consensus`); its ``k``
   best paths that are not already labels of the group become candidates of that
   cut alone, scored by the teacher like borrowed ones. Their support is
   ``F̂[i, h_1] · π(c) / π(h_1)``, with ``h_1`` the most supported input and ``π`` the
   path posterior of the network: a combination whose words out-vote ``h_1``'s in
   their slots gets more support than ``h_1``, one that takes minority words less.
5. Length normalisation (``length_norm``): every teacher log-likelihood ``s(h)`` that
   is compared across candidates becomes ``s(h) · L(1-best) / L(h)``, with ``L`` the
   number of characters of the normalised text plus one (the end of the sequence):
   the per-character likelihood, on the scale of the cut's own 1-best, so the
   temperature keeps its meaning and a short transcript gains nothing by being short.
6. Rounds (``rounds = R > 1``): after a round, every unannotated cut whose answer is a
   group label with confidence ``c >= round_confidence`` gets the prior row
   ``(1 - c) · Y_i + c · e_answer`` (a soft seed) and propagation and fusion run
   again, from the original priors each time, ``R - 1`` more times. ``choral tune``
   cross-validates one round.

Annotated cuts keep their reference (``source="reference"``); cuts without
any edge keep the teacher's 1-best (``source="teacher"``); the rest are
``source="propagated"``.

Pure computation on :class:`~.labels.CutEntry` lists and an adjacency matrix in
their order (no file I/O). :func:`rescore` runs it all; ``choral tune`` reuses the
steps: :func:`batch_priors` once per temperature, :func:`propagate_batch` once per
solve, :func:`fuse` once per λ.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
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
from .consensus import consensus_candidates
from .labels import (
    CutEntry,
    GroupLabels,
    build_group_labels,
    fused_scores,
    heard_words,
    log_posterior,
    own_log_posteriors,
    prior_row,
)

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
    support: np.ndarray      # row-normalised F (consensus columns: the path's support)
    teacher: np.ndarray      # teacher log-posterior per label column (-inf: not a candidate)
    degree: np.ndarray       # edges per cut (0: the cut keeps the teacher's 1-best)
    extra: list[list[str]] | None = None   # per row, its own consensus texts (columns ``extra_start``...)
    extra_start: int = 0                   # first consensus column (the batch's widest label set)
    vocabulary: frozenset[str] | None = None   # what the teacher says, given by the caller (None: from the batch)

    @cached_property
    def heard(self) -> frozenset[str]:
        """What the teacher says: ``vocabulary`` when given (tune passes the words of every searched cut, since a
        fold's batch holds only its held-out cuts' groups), else every word of the batch's n-best lists
        (:func:`heard_words`), read when needed."""
        return self.vocabulary if self.vocabulary is not None else heard_words(self.entries)

    def texts_of(self, row: int) -> tuple[list[str], list[str]]:
        """The normalised and original texts of ``row``'s columns: its group's labels, then its own extras."""
        labels = self.labels_of[self.entries[row].group]
        extra = self.extra[row] if self.extra is not None else []
        if not extra:
            return labels.texts, labels.originals
        filler = [""] * (self.extra_start - len(labels.texts))
        return labels.texts + filler + extra, labels.originals + filler + extra


# revises a batch's fused results: (batch, its rows in the whole entry list, results) -> results
Finisher = Callable[["BatchSupport", list[int], list[CutResult]], list[CutResult]]


@dataclass
class BatchPriors:
    """Label sets, prior matrix Y and teacher terms of a batch: they depend on T, not on α or the graph."""

    labels_of: dict[str, GroupLabels]      # each group's labels, as in :class:`BatchSupport`
    prior: np.ndarray        # Y: one-hot reference (annotated) or teacher posterior over the own n-best
    teacher: np.ndarray      # teacher log-posterior of the own n-best per label column (-inf elsewhere)
    annotated: np.ndarray    # rows with a reference: the seeds


def text_length(text: str) -> int:
    """``L(h)`` of length normalisation: characters of the normalised text plus one (the end of the sequence)."""
    return len(text) + 1


def length_normalised(entry: CutEntry) -> CutEntry:
    """``entry`` with every n-best score ``s(h)`` replaced by ``s(h) · L(1-best) / L(h)`` (module docstring)."""
    if not entry.hypotheses:
        return entry
    reference_length = text_length(entry.hypotheses[0])
    lengths = np.array([text_length(h) for h in entry.hypotheses], dtype=np.float64)
    return replace(entry, scores=np.asarray(entry.scores, dtype=np.float64) * reference_length / lengths)


def _scored_entries(entries: Sequence[CutEntry], config: PropagateConfig) -> list[CutEntry]:
    """The entries whose scores the engine compares: length-normalised when ``config.length_norm``."""
    return [length_normalised(e) for e in entries] if config.length_norm else list(entries)


def batch_priors(entries: list[CutEntry], config: PropagateConfig) -> BatchPriors:
    """Build every group's labels and each cut's prior row and teacher log-posteriors."""
    entries = _scored_entries(entries, config)
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
                    priors: BatchPriors | None = None, score_rows: Sequence[int] | None = None,
                    heard: frozenset[str] | None = None) -> BatchSupport:
    """Run the propagation kernel over a batch of whole groups and collect teacher terms (with sharing).

    ``adjacency`` and ``degree`` (its edges per row) are in the order of ``entries``.
    ``priors`` (from :func:`batch_priors` with the same temperature) may be reused across α values.
    ``score_rows`` limits the scorer to the rows whose transcripts will be decided (tuning
    decides only held-out cuts; the teacher terms of other rows never reach the support).
    ``heard`` (:attr:`BatchSupport.heard`): the words the teacher says, when the batch is not the whole story.
    """
    if priors is None:
        priors = batch_priors(entries, config)
    entries = _scored_entries(entries, config)
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
    degree = np.asarray(degree)
    if not config.share_candidates:
        return BatchSupport(entries, labels_of, support, teacher, degree, vocabulary=heard)

    borrowed = borrowed_candidates(support, teacher, annotated, config)
    decided = np.flatnonzero(~annotated & (degree > 0))
    if score_rows is not None:
        decided = np.intersect1d(decided, np.asarray(score_rows, dtype=np.int64))
    extra: list[list[str]] | None = None
    extra_start = support.shape[1]
    if config.consensus:
        extra = [[] for _ in entries]
        support = np.hstack([support, np.zeros((len(entries), config.consensus))])
        teacher = np.hstack([teacher, np.full((len(entries), config.consensus), -np.inf)])
        for row in decided:
            labels = labels_of[entries[row].group]
            combined = _consensus_row(labels.texts, support[row, :extra_start], teacher[row, :extra_start],
                                      borrowed[row], config)
            extra[row] = [text for text, _ in combined]
            for j, (_, value) in enumerate(combined):
                support[row, extra_start + j] = value
    if scorer is None:
        teacher[:, :extra_start][borrowed] = config.borrowed_floor
        if extra is not None:
            for index, texts in enumerate(extra):
                teacher[index, extra_start:extra_start + len(texts)] = config.borrowed_floor
        return BatchSupport(entries, labels_of, support, teacher, degree, extra, extra_start, heard)
    rows = np.flatnonzero(borrowed.any(axis=1))
    if score_rows is not None:
        unscored = np.setdiff1d(rows, np.asarray(score_rows, dtype=np.int64))
        rows = np.setdiff1d(rows, unscored)
        teacher[unscored, :extra_start] = np.where(borrowed[unscored], config.borrowed_floor,
                                                   teacher[unscored, :extra_start])
    if extra is not None:
        rows = np.union1d(rows, [r for r in decided if extra[r]]).astype(np.int64)
    wanted: list[tuple[int, list[int], list[str], list[str]]] = []  # row, its columns, their texts, normalised
    for row in rows:
        labels = labels_of[entries[row].group]
        columns = [int(c) for c in np.flatnonzero(borrowed[row])]
        texts = [labels.originals[c] for c in columns]
        normalised = [labels.texts[c] for c in columns]
        if extra is not None:
            columns += [extra_start + j for j in range(len(extra[row]))]
            texts += extra[row]
            normalised += extra[row]
        wanted.append((int(row), columns, texts, normalised))
    prefetch(scorer, [(entries[row].cut_id, texts) for row, _, texts, _ in wanted])  # one batched pass
    for index, chosen, texts, normalised in wanted:
        teacher[index] = _teacher_with_borrowed(entries[index], labels_of[entries[index].group], teacher[index],
                                                np.asarray(chosen, dtype=np.int64), texts, normalised, config, scorer)
    return BatchSupport(entries, labels_of, support, teacher, degree, extra, extra_start, heard)


def _consensus_row(texts: list[str], support: np.ndarray, teacher: np.ndarray, borrowed: np.ndarray,
                   config: PropagateConfig) -> list[tuple[str, float]]:
    """A cut's consensus candidates with their support (module docstring, step 4)."""
    candidates = np.flatnonzero((np.isfinite(teacher) | borrowed) & (support > 0))
    ranked = candidates[np.argsort(-support[candidates], kind="stable")][: config.consensus_inputs]
    if len(ranked) < 2:
        return []
    top = float(support[ranked[0]])
    combined = consensus_candidates([(texts[c], float(support[c])) for c in ranked], config.consensus,
                                    exclude=set(texts))
    return [(text, top * ratio) for text, ratio in combined]


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


def fused_row(batch: BatchSupport, row: int, fusion_weight: float) -> np.ndarray:
    """``λ · teacher + (1 − λ) · log F̂`` over the row's columns (-inf where the teacher term is); λ = 0 in a group
    formed by sound, where only own n-best and references compete (:func:`.labels.fused_scores`)."""
    entry = batch.entries[row]
    return fused_scores(entry, batch.labels_of[entry.group], batch.teacher[row], batch.support[row], fusion_weight)


def fuse(batch: BatchSupport, rows: Iterable[int], fusion_weight: float, config: PropagateConfig) -> list[CutResult]:
    """Decide the transcripts of ``rows`` of a batch with teacher weight λ = ``fusion_weight``.

    ``config`` supplies the temperature of the confidence of cuts that keep the teacher's 1-best;
    its own ``fusion_weight`` is not used, so one :class:`BatchSupport` serves every λ.
    """
    results = []
    for row in rows:
        texts, originals = batch.texts_of(row)
        results.append(_decide(batch.entries[row], texts, originals, fused_row(batch, row, fusion_weight),
                               int(batch.degree[row]), config))
    return results


def seeded_priors(priors: BatchPriors, batch: BatchSupport, fusion_weight: float, config: PropagateConfig
                  ) -> BatchPriors:
    """The priors of the next round: confident answers that are group labels become soft seeds (step 6)."""
    prior = priors.prior.copy()
    width = prior.shape[1]
    for row in np.flatnonzero(~priors.annotated & (np.asarray(batch.degree) > 0)):
        fused = fused_row(batch, int(row), fusion_weight)
        if not np.isfinite(fused).any():
            continue
        best = int(np.argmax(fused))
        finite = fused[np.isfinite(fused)]
        confidence = float(1.0 / np.exp(finite - fused[best]).sum())
        if best < width and confidence >= config.round_confidence:
            seed = np.zeros(width)
            seed[best] = 1.0
            prior[row] = (1 - confidence) * prior[row] + confidence * seed
    return replace(priors, prior=prior)


def _rescore_batch(entries: list[CutEntry], adjacency: sp.csr_matrix, degree: np.ndarray,
                   config: PropagateConfig, scorer: Scorer | None, finish: Finisher | None = None,
                   indices: Sequence[int] = ()) -> list[CutResult]:
    priors = batch_priors(entries, config)
    batch = propagate_batch(entries, adjacency, degree, config, scorer, priors=priors)
    for _ in range(config.rounds - 1):
        batch = propagate_batch(entries, adjacency, degree, config, scorer,
                                priors=seeded_priors(priors, batch, config.fusion_weight, config))
    results = fuse(batch, range(len(entries)), config.fusion_weight, config)
    return results if finish is None else finish(batch, list(indices), results)


def _teacher_with_borrowed(entry: CutEntry, labels: GroupLabels, teacher_row: np.ndarray, columns: np.ndarray,
                           texts: Sequence[str], normalised: Sequence[str], config: PropagateConfig,
                           scorer: Scorer | None) -> np.ndarray:
    """Teacher log-posteriors over the cut's own n-best plus ``texts`` in ``columns`` (borrowed from
    neighbours or combined by consensus; ``normalised``: their normalised forms), renormalised together."""
    row = teacher_row.copy()
    if scorer is None:
        row[columns] = config.borrowed_floor
        return row
    borrowed_scores = np.asarray(scorer(entry.cut_id, list(texts)), dtype=np.float64)
    if borrowed_scores.shape != (len(columns),):
        raise ChoralError(f"scorer returned {borrowed_scores.shape} scores for {len(columns)} texts")
    if config.length_norm and entry.hypotheses:
        reference_length = text_length(entry.hypotheses[0])
        borrowed_scores = borrowed_scores * reference_length / np.array(
            [text_length(t) for t in normalised], dtype=np.float64)
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


def _decide(entry: CutEntry, texts: list[str], originals: list[str], fused_row: np.ndarray, degree: int,
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
    text = texts[best]
    original = teacher_text if text == entry.hypotheses[0] else originals[best]
    return CutResult(original, confidence, teacher_text, "propagated")
