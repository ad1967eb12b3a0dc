"""``choral group``: put cuts whose n-best hypotheses overlap into the same group.

Two streaming passes over the decoded manifest: the first collects each cut's
normalised top-k hypotheses (and a reference to its embedding), MinHash/LSH
grouping assigns group labels (:mod:`.grouping`; components too large to keep
are split by embedding similarity, :mod:`.split`), the second pass writes every
cut again with ``custom.group`` (``g<N>`` for groups, ``s<N>`` for singletons)
and ``custom.group_size``. Full cut objects are never all held in memory: the
first pass keeps the texts and each cut's embedding reference, and the second
passes every cut's JSON object through with the two fields added (the first
pass validated the cuts; no lhotse objects are rebuilt and serialised again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from lhotse import MonoCut
from lhotse.cut import Cut

from ..executor.base import Executor
from ..fields import custom_field, nbest
from ..graph.store import ArrayReader
from ..grouped import SOUND_PREFIX
from ..manifest import CutWriter, array_storage_files, iter_cut_dicts, iter_cuts
from ..meta import StageRecord, is_up_to_date, write_meta
from ..progress import NullProgress, Progress
from ..text import TextNormalizer
from .grouping import GroupingConfig, group_hypotheses


@dataclass(frozen=True)
class GroupSummary:
    """What ``choral group`` did, for the end-of-run summary."""

    output: Path
    skipped: bool
    n_cuts: int = 0
    n_groups: int = 0
    n_singletons: int = 0
    n_by_sound: int = 0      # groups formed by sound (step 5), of n_groups
    largest: int = 0
    n_split: int = 0
    seconds: float = 0.0


def group_id(label: int, size: int, by_sound: bool = False) -> str:
    """Stable, sortable group name: ``g`` for groups of shared words, ``a`` for groups formed by sound alone
    (grouping step 5; the graph links their cuts by nearest neighbours too), ``s`` for singletons."""
    return f"{'s' if size == 1 else SOUND_PREFIX if by_sound else 'g'}{label:07d}"


def _embedding_only(cut: Cut) -> Cut:
    """A light stand-in for ``cut`` that keeps just what loading its embedding needs."""
    embedding = custom_field(cut, "embedding")
    return MonoCut(id=cut.id, start=0.0, duration=0.0, channel=0,
                   custom={"embedding": embedding} if embedding is not None else None)


def _embedding_loader(cuts: list[Cut], source: Path) -> Callable[[np.ndarray], np.ndarray | None]:
    """``embeddings(indices)`` for :func:`.grouping.group_hypotheses`: the pooled embeddings of some
    of ``cuts``, for splitting large groups by sound; None if unusable."""

    reader = ArrayReader(source)  # embeddings.h5 stays open between calls

    def embeddings(indices: np.ndarray) -> np.ndarray | None:
        chosen = [cuts[i] for i in indices]
        if any(custom_field(c, "embedding") is None for c in chosen):
            return None
        vectors = [reader.load(c, "embedding") for c in chosen]
        if len({v.shape for v in vectors}) != 1 or vectors[0].ndim != 1:
            return None
        return np.stack(vectors)

    return embeddings


def group_manifest(
    decoded: str | Path,
    output: str | Path,
    config: GroupingConfig = GroupingConfig(),
    normalizer: TextNormalizer = TextNormalizer(),
    *,
    force: bool = False,
    progress: Progress = NullProgress(),
    executor: Executor | None = None,
) -> GroupSummary:
    """Read ``decoded``, assign ``custom.group`` to every cut, write ``output`` atomically.

    With an ``executor`` the MinHash signatures of chunks of cuts are computed in parallel (the same
    grouping); reading, banding, linking and writing stay in this process."""
    decoded, output = Path(decoded), Path(output)
    record = StageRecord.create(
        "group",
        inputs=[decoded, *array_storage_files(decoded)] if decoded.exists() else [],
        params={"grouping": asdict(config), "normalizer": asdict(normalizer)},
        outputs=[output],
    )
    if not force and decoded.exists() and is_up_to_date(record, output):
        return GroupSummary(output=output, skipped=True)
    started = time.perf_counter()

    progress.task("reading hypotheses", None)
    hypotheses: list[list[str]] = []
    cuts_for_embeddings: list[Cut] = []  # cut objects kept only for their embedding references
    for cut in iter_cuts(decoded):
        hypotheses.append([normalizer(h.text) for h in nbest(cut, decoded)[: config.top_k]])
        cuts_for_embeddings.append(_embedding_only(cut))
        progress.advance()

    progress.task("grouping (MinHash LSH)", len(hypotheses))
    done = 0

    def report(n: int) -> None:
        nonlocal done
        progress.advance(n - done)
        done = n

    embeddings = _embedding_loader(cuts_for_embeddings, decoded)
    if executor is None:
        grouping = group_hypotheses(hypotheses, config, progress=report, embeddings=embeddings)
    else:
        chunk_cuts = max(1_000, -(-len(hypotheses) // (2 * executor.workers)))
        grouping = group_hypotheses(hypotheses, config, progress=report, embeddings=embeddings,
                                    map_chunks=executor.map, chunk_cuts=min(chunk_cuts, 32_768))
    del hypotheses, cuts_for_embeddings, embeddings  # the loader holds the list too

    progress.task("writing grouped manifest", len(grouping.labels))
    labels, sizes = grouping.labels, grouping.sizes
    by_sound = grouping.by_sound if grouping.by_sound is not None else np.zeros(sizes.size, dtype=bool)
    with CutWriter(output) as writer:
        for index, data in enumerate(iter_cut_dicts(decoded)):
            if index >= len(labels):
                raise RuntimeError(f"{decoded} changed while it was being grouped")
            label = int(labels[index])
            size = int(sizes[label])
            data["custom"] = dict(data.get("custom") or {}, group=group_id(label, size, bool(by_sound[label])),
                                  group_size=size)
            writer.write_dict(data)
            progress.advance()
        if writer.count != len(labels):
            raise RuntimeError(f"{decoded} changed while it was being grouped")
    write_meta(record, output)
    return GroupSummary(
        output=output,
        skipped=False,
        n_cuts=len(labels),
        n_groups=grouping.n_groups,
        n_singletons=grouping.n_singletons,
        n_by_sound=int(np.count_nonzero(by_sound)),
        largest=grouping.largest,
        n_split=grouping.n_split,
        seconds=time.perf_counter() - started,
    )
