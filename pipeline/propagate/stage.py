"""The ``choral propagate`` stage: read the grouped manifest and its graph, rescore, write ``rescored.jsonl.gz``.

Every cut of the grouped manifest is written back with ``custom.choral`` set to the
engine's answer (:mod:`.engine`). The stage is skipped when the sidecar says its inputs,
parameters and scorer are unchanged (an anonymous scorer may change between runs, so
with one the stage always runs), and redone with ``force``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..fields import CutResult
from ..graph import CutGraph
from ..grouped import iter_grouped
from ..manifest import CutWriter, check_readable, iter_cuts
from ..meta import StageRecord, is_up_to_date, write_meta
from ..progress import NullProgress, Progress
from ..teacher.contracts import Scorer, is_reproducible
from ..text import TextNormalizer
from .calibrate import finisher, relative_distances
from .config import PropagateConfig
from .engine import rescore
from .labels import CutEntry


@dataclass(frozen=True)
class PropagateSummary:
    """What ``choral propagate`` did, for the end-of-stage summary."""

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

    ``rescorer`` (:func:`.engine.rescore`'s signature) lets an executor run the batches elsewhere."""
    grouped, graph_file, output = check_readable(grouped), check_readable(graph_file), Path(output)
    record = StageRecord.create("propagate", inputs=[grouped, graph_file, *getattr(scorer, "inputs", [])],
                                params={"propagate": asdict(config), "normalizer": asdict(normalizer),
                                        "scorer": getattr(scorer, "name", None if scorer is None else "custom")},
                                outputs=[output])
    if not force and is_reproducible(scorer) and is_up_to_date(record, output):
        return PropagateSummary(output=output, skipped=True)
    started = time.perf_counter()
    entries, graph = read_grouped_and_graph(grouped, graph_file, normalizer, progress)
    adjacency = graph.adjacency(graph.threshold * config.threshold_scale, weighted=config.weighted_edges,
                                nearest=config.nearest, threshold_edges=not config.nearest_only)
    finish = None
    if config.calibrate:
        distances = relative_distances(graph.adjacency(graph.threshold * config.threshold_scale, weighted=True,
                                                       nearest=config.nearest,
                                                       threshold_edges=not config.nearest_only))
        finish = finisher(adjacency, distances, config.calibration, config.replace_margin, config.fusion_weight)
    progress.task("propagating", len(entries))
    results = rescorer(entries, adjacency, config, scorer, progress, finish=finish)

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
