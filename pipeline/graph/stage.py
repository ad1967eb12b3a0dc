"""``choral graph``: link cuts of the same group that sound alike.

For every group, all pairs of its cuts get a distance between their teacher
embeddings under the configured metric, looked up by name in the registry of
:mod:`.metrics` (built in: ``dtw-vector``, the paper's choice, ``dtw-frames``
and ``cosine``); the cut arrays are checked against what the metric declares.

Pairs closer than a learned threshold (:mod:`.threshold`) become binary edges.
Writes ``graph.npz`` (:mod:`.store`) and ``threshold.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..config import CHOICES, check_finite
from ..errors import ConfigError, InputError
from ..executor.base import Executor
from ..grouped import formed_by_sound, iter_grouped
from ..manifest import array_storage_files, check_readable, write_json
from ..meta import StageRecord, is_up_to_date, write_meta
from ..progress import NullProgress, Progress
from ..text import TextNormalizer
from .annotated import nearest_annotated
from .metrics import Metric, get_metric, metric_names
from .store import ArrayReader, CutGraph
from .threshold import MIN_POSITIVE, ThresholdFit, bimodal_split, evaluate_threshold, learn_threshold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphConfig:
    """How distances are measured and the edge threshold chosen."""

    metric: str = field(default="dtw-vector", metadata={CHOICES: metric_names})  # registered in :mod:`.metrics`
    window: int | None = None
    threshold: float | None = None
    confidence: float = 0.9
    quantile: float = 0.2
    min_positive: int = MIN_POSITIVE    # annotated positive pairs trusted alone (fewer: confident pairs join)
    threshold_prior: Literal["split", "none"] = "split"  # split: a fit on < min_positive positive pairs below the
    #                                                      split of the word-group distances is pulled up (threshold.py)
    sound_nearest: int = 3   # in groups formed by sound (choral group's step 5): link each cut to its k nearest
    sound_reach: float = 2.0  # ... when within this multiple of the threshold (0: at any distance)
    isolated_reach: float = 1.75  # word groups: a cut without an edge links to its nearest within this x (0: off)
    sound_scale: Literal["threshold", "split"] = "threshold"  # the sound reaches' unit (split: two modes' split)
    annotated_nearest: int = 32  # measure each cut against its k cosine-nearest annotated cuts, any group (0: off)

    def __post_init__(self) -> None:
        check_finite(self)
        get_metric(self.metric)  # ChoralError naming the registered metrics
        if self.window is not None and self.window < 0:
            raise ConfigError("window", f"must be a non-negative radius, not {self.window}")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError("quantile", f"must lie strictly between 0 and 1, not {self.quantile}")
        if self.threshold_prior not in ("split", "none"):
            raise ConfigError("threshold_prior", f"must be split or none, not {self.threshold_prior!r}")
        if self.min_positive < 1:
            raise ConfigError("min_positive", f"must be at least 1, not {self.min_positive}")
        if self.sound_nearest < 0:
            raise ConfigError("sound_nearest", f"must be non-negative, not {self.sound_nearest}")
        if self.sound_reach < 0:
            raise ConfigError("sound_reach", f"must be non-negative, not {self.sound_reach}")
        if self.sound_scale not in ("split", "threshold"):
            raise ConfigError("sound_scale", f"must be split or threshold, not {self.sound_scale!r}")
        if self.isolated_reach < 0:
            raise ConfigError("isolated_reach", f"must be 0 (off) or positive, not {self.isolated_reach}")
        if self.annotated_nearest < 0:
            raise ConfigError("annotated_nearest", f"must be 0 (off) or a count, not {self.annotated_nearest}")


@dataclass(frozen=True)
class GraphSummary:
    """What ``choral graph`` did, for the end-of-run summary."""

    output: Path
    threshold_file: Path
    skipped: bool
    n_cuts: int = 0
    n_groups: int = 0
    n_pairs: int = 0
    n_edges: int = 0
    n_isolated: int = 0
    fit: ThresholdFit | None = None
    distance_seconds: float = 0.0
    seconds: float = 0.0


@dataclass
class _CutTable:
    """The per-cut columns the graph stage needs, in manifest order."""

    ids: list[str]
    groups: list[str]
    series: list[np.ndarray]
    references: list[str | None]
    top_texts: list[str]
    top_posteriors: np.ndarray
    pooled: list[np.ndarray] = field(default_factory=list)  # pooled embeddings, when the metric reads others


def _top_posterior(scores: list[float]) -> float:
    """Teacher posterior of the 1-best within its n-best (softmax of log-probabilities)."""
    values = np.asarray(scores, dtype=np.float64)
    return float(1.0 / np.exp(values - values[0]).sum())


def _read_table(grouped: Path, metric: Metric, normalizer: TextNormalizer, progress: Progress,
                pooled: bool = False) -> _CutTable:
    """Every cut's group, the array the metric reads (checked against what it declares) and text fields; with
    ``pooled``, also each cut's pooled ``custom.embedding`` when the metric reads another array (same pass)."""
    name = metric.field
    table = _CutTable([], [], [], [], [], np.zeros(0))
    posteriors: list[float] = []
    reader = ArrayReader(grouped)  # keeps embeddings.h5 open (its files close with it on an error too)
    for record in iter_grouped(grouped):
        cut, hypotheses, reference = record.cut, record.hypotheses, record.reference
        series = reader.load(cut, name)
        if pooled and name != "embedding":
            table.pooled.append(reader.load(cut, "embedding").reshape(-1))
        if series.ndim != metric.ndim:
            raise InputError(grouped, f"custom.{name} must be {metric.ndim}-D, found shape {series.shape}",
                             cut_id=cut.id)
        if table.series:
            # DTW aligns any lengths but frames need one feature dimension; cosine needs one length
            compared = series.shape if metric.same_shape else series.shape[1:]
            first = table.series[0].shape if metric.same_shape else table.series[0].shape[1:]
            if compared != first:
                raise InputError(grouped, f"custom.{name} has shape {series.shape}, "
                                          f"the first cut's has {table.series[0].shape}", cut_id=cut.id)
        table.ids.append(cut.id)
        table.groups.append(record.group)
        table.series.append(series)
        table.references.append(normalizer(reference) if reference is not None else None)
        table.top_texts.append(normalizer(hypotheses[0].text))
        posteriors.append(_top_posterior([h.score for h in hypotheses]))
        progress.advance()
    reader.close()
    table.top_posteriors = np.asarray(posteriors)
    return table


def within_group_pairs(groups: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """All unordered pairs of cuts sharing a group (indices into ``groups``), and the group count."""
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    boundaries = np.flatnonzero(np.diff(inverse[order])) + 1
    pair_a: list[np.ndarray] = []
    pair_b: list[np.ndarray] = []
    for members in np.split(order, boundaries):
        if len(members) < 2:
            continue
        i, j = np.triu_indices(len(members), k=1)
        pair_a.append(members[i])
        pair_b.append(members[j])
    if not pair_a:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), len(codes)
    return np.concatenate(pair_a).astype(np.int64), np.concatenate(pair_b).astype(np.int64), len(codes)


_PAIRS_PER_STEP = 1_000_000  # pairs per progress step (large enough to keep every core busy)


def pair_distances(table: _CutTable, pair_a: np.ndarray, pair_b: np.ndarray, config: GraphConfig,
                   progress: Progress = NullProgress()) -> np.ndarray:
    """Distances of the candidate pairs under the configured metric, in progress-bar steps."""
    distances_of = get_metric(config.metric).distances
    distances = np.zeros(len(pair_a))
    for start in range(0, len(pair_a), _PAIRS_PER_STEP):
        stop = min(start + _PAIRS_PER_STEP, len(pair_a))
        distances[start:stop] = distances_of(table.series, pair_a[start:stop], pair_b[start:stop], config.window)
        progress.advance(stop - start)
    return distances


def _metric_distances(config: GraphConfig, item: tuple[list[np.ndarray], np.ndarray, np.ndarray]) -> np.ndarray:
    """A worker's item: the distances of some pairs, with the series of just their cuts."""
    series, pair_a, pair_b = item
    return get_metric(config.metric).distances(series, pair_a, pair_b, config.window)


def distances_by_groups(table: _CutTable, pair_a: np.ndarray, pair_b: np.ndarray, config: GraphConfig,
                        executor: Executor, progress: Progress = NullProgress()) -> np.ndarray:
    """:func:`pair_distances` on an executor: the pairs (grouped by group, as :func:`within_group_pairs`
    orders them) cut at group boundaries into batches of whole groups, about four per worker; each batch
    ships only its cuts' series. Each distance depends on its pair alone, so the result is the serial one."""
    if len(pair_a) == 0:
        return np.zeros(0)
    _, codes = np.unique(np.asarray(table.groups), return_inverse=True)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(codes[pair_a])) + 1])  # where each group's pairs begin
    wanted = np.linspace(0, len(pair_a), 4 * executor.workers + 1)[1:-1]
    cuts = np.unique(starts[np.clip(np.searchsorted(starts, wanted), 0, len(starts) - 1)])
    bounds = [0, *[int(c) for c in cuts if 0 < c < len(pair_a)], len(pair_a)]
    items = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        a, b = pair_a[start:stop], pair_b[start:stop]
        members = np.unique(np.concatenate([a, b]))
        items.append(([table.series[i] for i in members], np.searchsorted(members, a), np.searchsorted(members, b)))
    parts = executor.map(_metric_distances, items, config)
    progress.advance(len(pair_a))
    return np.concatenate(parts)


def pooled_vectors(table: _CutTable, metric: Metric) -> np.ndarray:
    """``(n, d)`` pooled embeddings of the cuts, in table order: the metric's own series when it reads them, else
    those :func:`_read_table` read beside them (``pooled=True``)."""
    return np.stack(table.series if metric.field == "embedding" else table.pooled).astype(np.float64)


def annotated_pairs(table: _CutTable, config: GraphConfig, executor: Executor | None,
                    progress: Progress = NullProgress()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cut against its ``annotated_nearest`` cosine-nearest annotated cuts (:mod:`.annotated`), any group:
    the pairs and their distances under the graph's metric."""
    annotated = np.asarray([r is not None for r in table.references])
    metric = get_metric(config.metric)
    if config.annotated_nearest == 0 or not annotated.any() or not table.ids:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    a, b = nearest_annotated(pooled_vectors(table, metric), annotated, config.annotated_nearest)
    progress.task(f"{config.metric} distances to annotated cuts (pairs)", len(a))
    # one star per annotated cut (it against every cut that chose it): the pairs of one call share an end, which the
    # frame kernel tiles without waste; the pairs in cut order would cross the whole pool (9x slower on the
    # accented pool: 66 s against 7 s for 95,040 pairs)
    order = np.argsort(b, kind="stable")
    starts = np.flatnonzero(np.r_[True, b[order][1:] != b[order][:-1]]) if len(order) else np.zeros(0, np.int64)
    stars = np.split(order, starts[1:])
    items = [([table.series[int(b[rows[0]])], *(table.series[i] for i in a[rows])],
              np.zeros(len(rows), dtype=np.int64), np.arange(1, len(rows) + 1)) for rows in stars if len(rows)]
    if executor is None:
        parts = [_metric_distances(config, item) for item in items]
    else:
        parts = executor.map(_metric_distances, items, config)
    distances = np.zeros(len(a))
    for rows, part in zip((rows for rows in stars if len(rows)), parts):
        distances[rows] = part
    progress.advance(len(a))
    return a, b, distances


def choose_threshold(table: _CutTable, pair_a: np.ndarray, pair_b: np.ndarray, distances: np.ndarray,
                     config: GraphConfig) -> ThresholdFit:
    """Apply the documented rules in order: user, annotated, confident-teacher, quantile."""
    references = np.asarray([r if r is not None else "" for r in table.references], dtype=object)
    annotated = np.asarray([r is not None for r in table.references])
    both_annotated = annotated[pair_a] & annotated[pair_b]
    labelled_positive = references[pair_a] == references[pair_b]
    if config.threshold is not None:
        if both_annotated.any():
            return evaluate_threshold(distances[both_annotated], labelled_positive[both_annotated],
                                      config.threshold, "user")
        return ThresholdFit(threshold=config.threshold, rule="user", n_pairs=len(distances))
    confident = table.top_posteriors >= config.confidence
    both_confident = confident[pair_a] & confident[pair_b]
    top = np.asarray(table.top_texts, dtype=object)
    agree = top[pair_a] == top[pair_b]
    return learn_threshold(distances, both_annotated, labelled_positive, both_confident, agree, config.quantile,
                           config.min_positive, config.threshold_prior)


def build_graph(
    grouped: str | Path,
    output: str | Path,
    threshold_file: str | Path | None = None,
    config: GraphConfig = GraphConfig(),
    normalizer: TextNormalizer = TextNormalizer(),
    *,
    force: bool = False,
    progress: Progress = NullProgress(),
    executor: Executor | None = None,
) -> GraphSummary:
    """Compute within-group distances, learn the threshold, write ``graph.npz`` and ``threshold.json``.

    With an ``executor`` the distances are computed in batches of whole groups in parallel (the same
    distances); the threshold is chosen here."""
    grouped, output = check_readable(grouped), Path(output)
    threshold_file = Path(threshold_file) if threshold_file else output.with_name("threshold.json")
    record = StageRecord.create(
        "graph",
        inputs=[grouped, *array_storage_files(grouped)],
        params={"graph": asdict(config), "normalizer": asdict(normalizer)},
        outputs=[output, threshold_file],
    )
    if not force and is_up_to_date(record, output):
        return GraphSummary(output=output, threshold_file=threshold_file, skipped=True)
    started = time.perf_counter()

    progress.task("loading embeddings", None)
    table = _read_table(grouped, get_metric(config.metric), normalizer, progress, pooled=config.annotated_nearest > 0)
    pair_a, pair_b, n_groups = within_group_pairs(table.groups)

    progress.task(f"{config.metric} distances (pairs)", len(pair_a))
    distance_started = time.perf_counter()
    try:
        if executor is None:
            distances = pair_distances(table, pair_a, pair_b, config, progress)
        else:
            distances = distances_by_groups(table, pair_a, pair_b, config, executor, progress)
    except ValueError as error:
        raise InputError(grouped, str(error)) from None
    distance_seconds = time.perf_counter() - distance_started

    sound = np.array([formed_by_sound(g) for g in table.groups], dtype=bool)
    pair_sound = sound[pair_a]  # pairs never cross groups
    # the threshold is learned on word-grouped pairs: readings of words the teacher never heard sit further apart
    word = ~pair_sound
    fit = choose_threshold(table, pair_a[word], pair_b[word], distances[word], config)
    log.info("graph: %s distances of %d pairs in %.1f s; threshold %.4g by rule %s (from %d pairs)",
             config.metric, len(pair_a), distance_seconds, fit.threshold, fit.rule, fit.n_pairs)
    sound_threshold = bimodal_split(distances[pair_sound]) if config.sound_scale == "split" else None
    if pair_sound.any():
        log.info("graph: %d pairs formed by sound; their scale %s", int(pair_sound.sum()),
                 f"{sound_threshold:.4g} (two modes)" if sound_threshold is not None else "the learned threshold")
    try:
        near_a, near_b, near_d = annotated_pairs(table, config, executor, progress)
    except ValueError as error:
        raise InputError(grouped, str(error)) from None
    graph = CutGraph(np.asarray(table.ids), pair_a, pair_b, distances, fit.threshold, config.metric,
                     pair_sound, config.sound_nearest, config.sound_reach, config.isolated_reach, sound_threshold,
                     near_a, near_b, near_d)
    adjacency = graph.adjacency()
    degree = np.diff(adjacency.indptr)
    graph.save(output)
    write_json({**fit.to_dict(), "metric": config.metric, "window": config.window,
                "n_edges": int(adjacency.nnz // 2)}, threshold_file)
    write_meta(record, output)
    return GraphSummary(
        output=output,
        threshold_file=threshold_file,
        skipped=False,
        n_cuts=len(table.ids),
        n_groups=n_groups,
        n_pairs=len(pair_a),
        n_edges=int(adjacency.nnz // 2),
        n_isolated=int(np.sum(degree == 0)),
        fit=fit,
        distance_seconds=distance_seconds,
        seconds=time.perf_counter() - started,
    )
