"""``choral propagate``: spread good hypotheses across the graph and fuse with the teacher.

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
``source="propagated"``. The result is ``custom.choral`` on every cut of
``rescored.jsonl.gz``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import scipy.sparse as sp

from ..kernels.propagation import label_propagation, label_spreading, normalize_rows
from .config import from_mapping, read_yaml_mapping
from .errors import ChoralError, ConfigError, InputError
from .fields import CutResult
from .graph import CutGraph
from .grouped import iter_grouped
from .labels import CutEntry, build_group_labels, log_posterior, own_log_posteriors, prior_row
from .manifest import CutWriter, check_readable, iter_cuts
from .meta import StageRecord, is_up_to_date, write_meta
from .progress import NullProgress, Progress
from .teacher.contracts import Scorer
from .text import TextNormalizer

_EPS = 1e-12
# Relative residual at which CG stops: decisions compare log-supports, far coarser than this.
_CG_TOL = 1e-6


@dataclass(frozen=True)
class PropagateConfig:
    """Propagation and fusion parameters (``choral tune`` writes these to YAML)."""

    algorithm: Literal["spreading", "propagation"] = "spreading"
    alpha: float = 0.9
    fusion_weight: float = 0.3          # λ: weight of the teacher term
    temperature: float = 1.0            # T of the teacher posterior softmax
    threshold_scale: float = 1.0        # edges link pairs with distance <= scale * learned threshold
    weighted_edges: bool = False        # weight edges by exp(-d / threshold) instead of 1
    nearest: int = 0                    # also link each cut to its k nearest same-group cuts (0: threshold only)
    share_candidates: bool = True       # let labels from neighbours compete for a cut
    share_min: float = 1e-3             # minimum normalised support for a shared candidate
    max_borrowed: int = 32              # shared candidates per cut, most supported first (0: no cap)
    borrowed_floor: float = -4.0        # teacher log-posterior of a shared candidate without a scorer
    clamp_confidence: float = 0.95      # propagation: also clamp unannotated cuts this confident
    max_labels: int = 64                # label columns kept per group
    batch_cuts: int = 50_000            # cuts solved together (whole groups; bounds memory)

    def __post_init__(self) -> None:
        if self.algorithm not in ("spreading", "propagation"):
            raise ConfigError("algorithm", f"must be spreading or propagation, not {self.algorithm!r}")
        if not 0.0 <= self.alpha < 1.0:
            raise ConfigError("alpha", f"must be in [0, 1), not {self.alpha}")
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ConfigError("fusion_weight", f"must be in [0, 1], not {self.fusion_weight}")
        for name in ("temperature", "threshold_scale", "max_labels", "batch_cuts"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, not {getattr(self, name)}")
        if self.nearest < 0:
            raise ConfigError("nearest", f"must be 0 (threshold only) or a positive count, not {self.nearest}")
        if self.max_borrowed < 0:
            raise ConfigError("max_borrowed", f"must be 0 (no cap) or a positive count, not {self.max_borrowed}")


def load_params(path: str | Path, base: PropagateConfig = PropagateConfig()) -> PropagateConfig:
    """Read a YAML of PropagateConfig fields over ``base``, bare or under ``propagate:`` (as ``choral tune``
    writes them); unknown keys, wrong types and out-of-range values are InputErrors naming the key."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if "propagate" not in data:
        return from_mapping(PropagateConfig, data, path, "", base=base)
    for key in data:
        if key != "propagate":
            raise InputError(path, f"unknown key {key!r} (known at the top level: propagate)")
    return from_mapping(PropagateConfig, data["propagate"], path, "propagate", base=base)


@dataclass(frozen=True)
class PropagateSummary:
    output: Path
    skipped: bool
    n_cuts: int = 0
    sources: dict[str, int] | None = None
    changed: int = 0
    shared: int = 0
    n_edges: int = 0
    seconds: float = 0.0


def read_entries(grouped: Path, normalizer: TextNormalizer, progress: Progress = NullProgress()) -> list[CutEntry]:
    """The propagation view of every cut of a grouped manifest, in manifest order."""
    entries = []
    for record in iter_grouped(grouped):
        hypotheses, reference = record.hypotheses, record.reference
        entries.append(CutEntry(
            cut_id=record.cut.id,
            group=record.group,
            hypotheses=[normalizer(h.text) for h in hypotheses],
            originals=[h.text for h in hypotheses],
            scores=np.asarray([h.score for h in hypotheses]),
            reference=normalizer(reference) if reference is not None else None,
            reference_original=reference,
        ))
        progress.advance()
    return entries


def read_grouped_and_graph(grouped: Path, graph_file: Path, normalizer: TextNormalizer,
                           progress: Progress = NullProgress()) -> tuple[list[CutEntry], CutGraph]:
    """The grouped manifest's entries and its graph, checked to describe the same cuts in the same order."""
    progress.task("reading grouped manifest", None)
    entries = read_entries(grouped, normalizer, progress)
    graph = CutGraph.load(graph_file)
    if list(graph.cut_ids) != [e.cut_id for e in entries]:
        raise InputError(graph_file, f"its cuts do not match {grouped} (rerun `choral graph`)")
    return entries, graph


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
) -> list[CutResult]:
    """Propagate and fuse for every cut; ``adjacency`` is in the order of ``entries``."""
    if adjacency.shape != (len(entries), len(entries)):
        raise ChoralError(f"graph has {adjacency.shape[0]} cuts, manifest has {len(entries)}")
    results: list[CutResult | None] = [None] * len(entries)
    degree = np.diff(adjacency.indptr)
    for batch in _batches(entries, config.batch_cuts):
        for index, result in zip(batch, _rescore_batch([entries[i] for i in batch], adjacency[batch][:, batch],
                                                       degree[batch], config, scorer)):
            results[index] = result
        progress.advance(len(batch))
    return [r for r in results if r is not None]


@dataclass
class BatchSupport:
    """Propagation results for a batch of whole groups, before fusion."""

    entries: list[CutEntry]
    labels_of: dict
    support: np.ndarray      # row-normalised F
    teacher: np.ndarray      # teacher log-posterior per label column (-inf: not a candidate)
    degree: np.ndarray


@dataclass
class BatchPriors:
    """Label sets, prior matrix Y and teacher terms of a batch: they depend on T, not on α or the graph."""

    labels_of: dict
    prior: np.ndarray
    teacher: np.ndarray
    annotated: np.ndarray


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
    """Decide the transcripts of ``rows`` of a batch with teacher weight λ = ``fusion_weight``."""
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
                   config: PropagateConfig, scorer: Scorer | None) -> list[CutResult]:
    batch = propagate_batch(entries, adjacency, degree, config, scorer)
    return fuse(batch, range(len(entries)), config.fusion_weight, config)


def _teacher_with_borrowed(entry: CutEntry, labels, teacher_row: np.ndarray, columns: np.ndarray,
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
    own_best = {}
    for text, score in zip(entry.hypotheses, entry.scores):
        column = labels.index.get(text)
        if column is not None:
            own_best[column] = float(np.logaddexp(own_best[column], score)) if column in own_best else float(score)
    all_columns = np.concatenate([own_columns, columns])
    all_scores = np.concatenate([[own_best[c] for c in own_columns], borrowed_scores])
    row[all_columns] = log_posterior(all_scores, config.temperature)
    return row


def _decide(entry: CutEntry, labels, fused_row: np.ndarray, degree: int, config: PropagateConfig) -> CutResult:
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


def propagate_manifest(
    grouped: str | Path,
    graph_file: str | Path,
    output: str | Path,
    config: PropagateConfig = PropagateConfig(),
    normalizer: TextNormalizer = TextNormalizer(),
    *,
    scorer: Scorer | None = None,
    force: bool = False,
    progress: Progress = NullProgress(),
) -> PropagateSummary:
    """Read the grouped manifest and graph, rescore every cut, write ``rescored.jsonl.gz``."""
    grouped, graph_file, output = check_readable(grouped), check_readable(graph_file), Path(output)
    record = StageRecord.create("propagate", inputs=[grouped, graph_file, *getattr(scorer, "inputs", [])],
                                params={"propagate": asdict(config), "normalizer": asdict(normalizer),
                                        "scorer": getattr(scorer, "name", None if scorer is None else "custom")},
                                outputs=[output])
    reproducible = scorer is None or hasattr(scorer, "name")  # an anonymous scorer may change between runs
    if not force and reproducible and is_up_to_date(record, output):
        return PropagateSummary(output=output, skipped=True)
    started = time.perf_counter()
    entries, graph = read_grouped_and_graph(grouped, graph_file, normalizer, progress)
    adjacency = graph.adjacency(graph.threshold * config.threshold_scale, weighted=config.weighted_edges,
                                nearest=config.nearest)
    progress.task("propagating", len(entries))
    results = rescore(entries, adjacency, config, scorer, progress)

    progress.task("writing rescored manifest", len(entries))
    with CutWriter(output) as writer:
        for cut, result in zip(iter_cuts(grouped), results):
            cut.custom = dict(cut.custom or {}, choral=result.to_custom())
            writer.write(cut)
            progress.advance()
    write_meta(record, output)
    sources = Counter(r.source for r in results)
    changed = sum(r.source == "propagated" and r.text != r.teacher_text for r in results)
    shared = sum(
        r.source == "propagated" and normalizer(r.text) not in set(e.hypotheses) for r, e in zip(results, entries)
    )
    return PropagateSummary(output=output, skipped=False, n_cuts=len(results), sources=dict(sources),
                            changed=changed, shared=shared, n_edges=int(adjacency.nnz // 2),
                            seconds=time.perf_counter() - started)
