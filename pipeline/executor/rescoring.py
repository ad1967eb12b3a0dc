"""Propagation on an executor: the engine's batches of whole groups, each rescored by a worker.

Groups share no edges, so :func:`choral.pipeline.propagate.engine.rescore` already solves its batches
(whole groups, about ``propagate.batch_cuts`` cuts each) one at a time; here the same batches go to a
pool of workers, each holding its own copy of the teacher scorer (opened on its first borrowed
transcript, next to the propagation that asks for it). The same batches give the same answers as the
local run; the parallelism is the number of batches, so a cluster run sets ``propagate.batch_cuts`` to
about the pool size divided into the cut count (and a local run with that config answers the same).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import ChoralError
from ..fields import CutResult
from ..progress import NullProgress, Progress
from ..propagate import PropagateConfig
from ..propagate.engine import Finisher, _batches, _rescore_batch
from ..propagate.labels import CutEntry
from ..teacher.contracts import Scorer
from .base import Executor
from .faults import pause_point

Batch = tuple[list[CutEntry], sp.csr_matrix, np.ndarray, list[int]]


def _rescore_item(config: PropagateConfig, finish: Finisher | None, scorer: Scorer | None, shared: None,
                  item: Batch) -> list[CutResult]:
    """A worker's item: one batch of whole groups (and its rows in the manifest), rescored with the worker's
    scorer and revised by ``finish`` (the calibrated decision) as the local engine does."""
    pause_point("propagate")
    entries, adjacency, degree, indices = item
    return _rescore_batch(entries, adjacency, degree, config, scorer, finish, indices)


def parallel_rescorer(executor: Executor) -> Callable[..., list[CutResult]]:
    """A drop-in for :func:`~choral.pipeline.propagate.engine.rescore` that runs its batches on ``executor``."""

    def rescore(entries: Sequence[CutEntry], adjacency: sp.csr_matrix, config: PropagateConfig = PropagateConfig(),
                scorer: Scorer | None = None, progress: Progress = NullProgress(),
                finish: Finisher | None = None) -> list[CutResult]:
        if adjacency.shape != (len(entries), len(entries)):
            raise ChoralError(f"graph has {adjacency.shape[0]} cuts, manifest has {len(entries)}")
        degree = np.diff(adjacency.indptr)
        batches = list(_batches(entries, config.batch_cuts))
        items = [([entries[i] for i in batch], adjacency[batch][:, batch], degree[batch], list(batch))
                 for batch in batches]
        answers = executor.map_stateful(lambda: scorer, partial(_rescore_item, config, finish), items)
        results: list[CutResult | None] = [None] * len(entries)
        for batch, answer in zip(batches, answers):
            for index, result in zip(batch, answer):
                results[index] = result
        progress.advance(len(entries))
        return [r for r in results if r is not None]

    return rescore
