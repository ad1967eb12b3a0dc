"""Each cut's nearest annotated readings across the whole pool, whatever its group.

Groups join cuts whose teacher hypotheses overlap (or, for cuts nothing overlaps, whose pooled embeddings are
mutual nearest neighbours); a reading the teacher cannot read can land in a group without any annotated reading of
its words, though one sits elsewhere in the pool. On the development draws (fresh draws 14-24 and the dev draw of
``benchmarks/generalisation``), the annotated reading nearest by the graph's own distance was a reading of the same
prompt for 90% of the wrong labels whose prompt had one (811 of 895).

The DTW distance to every annotated cut costs ``n * a`` alignments; the candidates are first cut to each cut's
``k`` annotated cuts most similar by centred cosine of the pooled embeddings (one matrix product, ``O(n a d)``,
in row blocks of at most :data:`BLOCK_BYTES`), and only those pairs are aligned. On the large generator pool of
``benchmarks/generalisation`` (1,080 unannotated cuts, 120 annotated) the DTW-nearest annotated reading was among the
16 most cosine-similar for 96.5% of the cuts and among the 32 for 99.2%.
The pairs are stored in ``graph.npz``; :mod:`choral.pipeline.propagate.retrieve` decides which cuts take a text.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK_BYTES", "nearest_annotated"]

BLOCK_BYTES = 1 << 27  # the similarity rows held at once: at most 128 MiB (rows x a float64)


def nearest_annotated(vectors: np.ndarray, annotated: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(cut, annotated cut)``: every cut with its ``k`` most similar annotated cuts but itself, by
    cosine similarity of the vectors centred on their mean (row indices into ``vectors``; cut-major order).

    ``vectors`` is ``(n, d)``; ``annotated`` a boolean mask of length ``n``."""
    n = vectors.shape[0]
    targets = np.flatnonzero(annotated)
    if n == 0 or k < 1 or len(targets) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    pool = x[targets]                                   # (a, d)
    take = min(k, len(targets))
    cuts: list[np.ndarray] = []
    partners: list[np.ndarray] = []
    rows_per_block = max(1, BLOCK_BYTES // (8 * len(targets)))
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        block = x[start:stop] @ pool.T                   # (b, a)
        own = np.isin(targets, np.arange(start, stop))   # an annotated cut is never its own partner
        if own.any():
            columns = np.flatnonzero(own)
            block[targets[columns] - start, columns] = -np.inf
        top = np.argpartition(-block, take - 1, axis=1)[:, :take]   # (b, take)
        rows = np.repeat(np.arange(start, stop), take)
        chosen = top.reshape(-1)
        valid = np.isfinite(block[rows - start, chosen])
        cuts.append(rows[valid])
        partners.append(targets[chosen[valid]])
    return np.concatenate(cuts).astype(np.int64), np.concatenate(partners).astype(np.int64)
