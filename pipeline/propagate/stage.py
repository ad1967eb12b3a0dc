"""The ``choral propagate`` stage: read the grouped manifest and its graph, rescore, write ``rescored.jsonl.gz``.

Every cut of the grouped manifest is written back with ``custom.choral`` set to the
engine's answer (:mod:`.engine`). The stage is skipped when the sidecar says its inputs,
parameters and scorer are unchanged (an anonymous scorer may change between runs, so
with one the stage always runs), and redone with ``force``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..fields import CutResult
from ..graph import CutGraph
from ..grouped import GroupedFields, formed_by_sound, iter_grouped_fields
from ..manifest import CutWriter, check_readable, iter_cut_dicts
from ..meta import StageRecord, is_up_to_date, write_meta
from ..progress import NullProgress, Progress
from ..teacher.contracts import Scorer, is_reproducible
from ..text import TextNormalizer
from .calibrate import Finish, Rule, finisher, relative_distances
from .config import PropagateConfig
from .engine import rescore
from .labels import CutEntry
from .retrieve import annotated_readings, retrieve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PropagateSummary:
    """What ``choral propagate`` did, for the end-of-stage summary."""

    output: Path
    skipped: bool
    n_cuts: int = 0
    sources: dict[str, int] | None = None
    changed: int = 0
    shared: int = 0
    retrieved: int = 0      # labels taken from the nearest annotated reading in another group (:mod:`.retrieve`)
    n_edges: int = 0
    seconds: float = 0.0


def _entry(record: GroupedFields, normalizer: TextNormalizer) -> CutEntry:
    """The propagation view of one cut: normalised n-best texts and reference beside the originals."""
    originals = [h.text for h in record.hypotheses]
    reference = record.reference
    return CutEntry(cut_id=record.cut_id, group=record.group, hypotheses=[normalizer(text) for text in originals],
                    originals=originals, scores=np.asarray([h.score for h in record.hypotheses]),
                    reference=normalizer(reference) if reference is not None else None,
                    reference_original=reference, snr_db=record.snr_db)


def read_entries(grouped: Path, normalizer: TextNormalizer, progress: Progress = NullProgress()) -> list[CutEntry]:
    """The propagation view of every cut of a grouped manifest, in manifest order (read as JSON lines,
    without lhotse objects)."""
    entries = []
    for record in iter_grouped_fields(grouped):
        entries.append(_entry(record, normalizer))
        progress.advance()
    return entries


def annotated_groups(grouped: Path) -> set[str]:
    """The groups that hold an annotated cut: one pass over the JSON lines, reading only group and
    supervisions."""
    return {record.group for record in iter_grouped_fields(grouped, keep=lambda group: False)
            if record.reference is not None}


def subgraph(graph: CutGraph, rows: np.ndarray) -> CutGraph:
    """The graph over the cuts ``rows`` (increasing) only, in their order; every pair must join two cuts of
    ``rows`` or two cuts outside it (true for whole groups: pairs never cross groups)."""
    position = np.full(graph.n_cuts, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    inside = position[graph.pair_a] >= 0
    annotated = {}
    if graph.annotated_a is not None and graph.annotated_b is not None and graph.annotated_distances is not None:
        both = (position[graph.annotated_a] >= 0) & (position[graph.annotated_b] >= 0)  # these pairs cross groups
        annotated = dict(annotated_a=position[graph.annotated_a[both]], annotated_b=position[graph.annotated_b[both]],
                         annotated_distances=graph.annotated_distances[both])
    return replace(graph, cut_ids=graph.cut_ids[rows], pair_a=position[graph.pair_a[inside]],
                   pair_b=position[graph.pair_b[inside]], distances=graph.distances[inside],
                   pair_sound=graph.pair_sound[inside] if graph.pair_sound is not None else None, **annotated)


def read_grouped_and_graph(grouped: Path, graph_file: Path, normalizer: TextNormalizer,
                           progress: Progress = NullProgress(), *,
                           annotated_groups_only: bool = False,
                           groups: Collection[str] | None = None) -> tuple[list[CutEntry], CutGraph]:
    """The grouped manifest's entries and its graph, checked to describe the same cuts in the same order.

    ``annotated_groups_only`` (``choral tune``, which cross-validates on annotated cuts, whose neighbours
    are all in their groups) gives only the cuts of groups with an annotated cut and the graph over them
    (:func:`subgraph`): a first pass finds those groups, the second reads just their n-best lists, so the
    other cuts' texts are never normalised or held. ``groups`` gives only the cuts of those groups (tune's
    sample, :func:`choral.pipeline.tune.crossval.read_census`) the same way, without the first pass."""
    progress.task("reading grouped manifest", None)
    keep = None
    if annotated_groups_only:
        wanted = annotated_groups(grouped)
        keep = wanted.__contains__
    elif groups is not None:
        keep = set(groups).__contains__
    ids: list[str] = []  # every cut's id, for the check against the graph
    kept_rows: list[int] = []
    entries = []
    for row, record in enumerate(iter_grouped_fields(grouped, keep)):
        ids.append(record.cut_id)
        if keep is None or keep(record.group):
            kept_rows.append(row)
            entries.append(_entry(record, normalizer))
        progress.advance()
    graph = CutGraph.load(graph_file)
    if len(graph.cut_ids) != len(ids) or not np.array_equal(graph.cut_ids, np.asarray(ids, dtype=str)):
        raise InputError(graph_file, f"its cuts do not match {grouped} (rerun `choral graph`)")
    del ids
    if keep is not None:
        graph = subgraph(graph, np.asarray(kept_rows, dtype=np.int64))
    return entries, graph


def propagation_adjacency(graph: CutGraph, config: PropagateConfig) -> sp.csr_matrix:
    """The graph propagation runs on: threshold (and k-nearest) edges at ``threshold_scale`` x the learned
    threshold."""
    return graph.adjacency(graph.threshold * config.threshold_scale, weighted=config.weighted_edges,
                           nearest=config.nearest, threshold_edges=not config.nearest_only)


def decision_inputs(entries: Sequence[CutEntry], graph: CutGraph, config: PropagateConfig
                    ) -> tuple[sp.csr_matrix, sp.csr_matrix | None, list[list[tuple[float, str]]]]:
    """What the calibrated decision reads beside the adjacency, over the whole manifest: edge distances over the
    threshold, the sound distances of groups formed by sound, and the measured annotated readings of their cuts."""
    distances = relative_distances(graph.adjacency(graph.threshold * config.threshold_scale, weighted=True,
                                                   nearest=config.nearest, threshold_edges=not config.nearest_only))
    # the rival test reads them only for unannotated cuts of groups formed by sound: the rest stay empty, so the
    # decision hook (shipped to every worker on an executor) carries no more than it needs
    by_sound = np.asarray([entry.reference is None and formed_by_sound(entry.group) for entry in entries], bool)
    readings = annotated_readings(graph, [e.reference for e in entries], graph.sound_scale, rows=by_sound)
    return distances, graph.sound_distances(), readings


def calibrated_finisher(entries: Sequence[CutEntry], graph: CutGraph, config: PropagateConfig,
                        adjacency: sp.csr_matrix) -> Finish:
    """The engine's ``finish`` hook of the calibrated decision (:func:`.calibrate.finisher`) over ``graph``."""
    distances, sound, readings = decision_inputs(entries, graph, config)
    return finisher(adjacency, distances, Rule.of(config), config.fusion_weight, sound, readings)


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
    rescorer: Callable[..., list[CutResult]] = rescore,
) -> PropagateSummary:
    """Read the grouped manifest and graph, rescore every cut, write ``rescored.jsonl.gz``.

    ``rescorer`` (:func:`.engine.rescore`'s signature) lets an executor run the batches elsewhere. With the
    calibrated decision, :func:`.retrieve.retrieve` then runs over the whole manifest (its pairs cross groups)."""
    grouped, graph_file, output = check_readable(grouped), check_readable(graph_file), Path(output)
    record = StageRecord.create("propagate", inputs=[grouped, graph_file, *getattr(scorer, "inputs", [])],
                                params={"propagate": asdict(config), "normalizer": asdict(normalizer),
                                        "scorer": getattr(scorer, "name", None if scorer is None else "custom")},
                                outputs=[output])
    if not force and is_reproducible(scorer) and is_up_to_date(record, output):
        return PropagateSummary(output=output, skipped=True)
    started = time.perf_counter()
    entries, graph = read_grouped_and_graph(grouped, graph_file, normalizer, progress)
    unmeasured = sum(e.snr_db is None for e in entries)
    if config.calibrate and config.noisy_pair_snr > 0 and unmeasured:
        log.warning("propagate: %d of %d cuts of %s have no custom.snr_db, so noisy_pair_snr %g dB cannot set aside "
                    "their noisy pairs; decode them again with choral >= this version (decode --measure-snr)",
                    unmeasured, len(entries), grouped, config.noisy_pair_snr)
    adjacency = propagation_adjacency(graph, config)
    finish = calibrated_finisher(entries, graph, config, adjacency) if config.calibrate else None
    progress.task("propagating", len(entries))
    results = rescorer(entries, adjacency, config, scorer, progress, finish=finish)
    retrieved = 0
    if config.calibrate:  # a struggling 1-best may take its nearest annotated reading from another group
        kept = results
        results = retrieve(entries, results, graph, config, scorer, adjacency)
        retrieved = sum(a is not b for a, b in zip(kept, results))

    progress.task("writing rescored manifest", len(entries))
    with CutWriter(output) as writer:  # each line passed through as JSON, with custom.choral added
        for data, entry, result in zip(iter_cut_dicts(grouped), entries, results, strict=True):
            if data["id"] != entry.cut_id:
                raise InputError(grouped, "changed while it was being propagated; rerun", cut_id=str(data["id"]))
            data["custom"] = dict(data.get("custom") or {}, choral=result.to_custom())
            writer.write_dict(data)
            progress.advance()
    write_meta(record, output)
    sources = Counter(r.source for r in results)
    changed = sum(r.source == "propagated" and r.text != r.teacher_text for r in results)
    shared = sum(
        r.source == "propagated" and normalizer(r.text) not in set(e.hypotheses) for r, e in zip(results, entries)
    )
    return PropagateSummary(output=output, skipped=False, n_cuts=len(results), sources=dict(sources),
                            changed=changed, shared=shared, retrieved=retrieved, n_edges=int(adjacency.nnz // 2),
                            seconds=time.perf_counter() - started)
