"""Step 5 of the grouping (:mod:`.grouping`): group the cuts that word overlap left alone, by sound.

A cut whose teacher hypotheses are mostly wrong (words the teacher never heard, heavy accents, noise)
shares too few words with anything to pass the Jaccard test, and stays a singleton: no edge, no
neighbour, the teacher's reading kept. Yet other readings of the same words sound alike, and the
teacher-encoder's pooled embedding finds them: on the accented benchmark's singletons (mostly the read
passage), a singleton's nearest singleton by cosine is a reading of the same prompt 86% of the time.

The singletons' pooled embeddings ``e_i`` are centred on their mean and scaled to unit length,
``u_i = (e_i - m) / ||e_i - m||``, and two singletons are linked when each is among the other's
``k`` most similar (*mutual* k nearest neighbours by ``s_ij = u_i . u_j``): mutual links do not chain
a far outlier onto a cluster, and every cut gets at most ``k`` links. Linked singletons are merged most
similar first, up to a cap of cuts per group (``acoustic_max_size``) (size-capped single linkage, :mod:`.split`).

This only proposes neighbours: the graph stage still measures every pair of a group by DTW and links only
pairs under its learned threshold, so a wrong proposal costs DTW time, not a wrong edge. The cost here is
``O(s^2 d)`` for ``s`` singletons of dimension ``d`` (one matrix product; 10^5 singletons of 256
dimensions are about 5 * 10^12 flops), in row blocks of at most :data:`BLOCK_BYTES`.
"""

from __future__ import annotations

import numpy as np

from .split import capped_union

__all__ = ["BLOCK_BYTES", "mutual_neighbours", "group_singletons"]

BLOCK_BYTES = 1 << 27  # the similarity rows held at once: at most 128 MiB (rows x s float64)


def mutual_neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(u, v, s)``, ``u < v``, that are each other's ``k`` nearest by centred cosine similarity ``s``."""
    n = vectors.shape[0]
    if n < 2 or k < 1:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    k = min(k, n - 1)
    nearest = np.empty((n, k), np.int64)            # (n, k): each row's k most similar others
    similarity = np.empty((n, k))
    rows_per_block = max(1, BLOCK_BYTES // (8 * n))
    for start in range(0, n, rows_per_block):
        block = x[start:start + rows_per_block] @ x.T   # (b, n)
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = -np.inf          # never one's own neighbour
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        nearest[start:start + block.shape[0]] = top
        similarity[start:start + block.shape[0]] = np.take_along_axis(block, top, axis=1)
    u = np.repeat(np.arange(n), k)
    v = nearest.reshape(-1)
    s = similarity.reshape(-1)
    mutual = (u < v) & np.isin(v * n + u, u * n + v)  # (v, u) is a link too
    return u[mutual], v[mutual], s[mutual]


def group_singletons(vectors: np.ndarray, k: int, max_size: int) -> np.ndarray:
    """A cluster id per row of ``vectors`` (one singleton each): mutual-kNN links merged most similar
    first, no cluster larger than ``max_size``; rows that link to nothing keep a cluster of their own."""
    u, v, s = mutual_neighbours(vectors, k)
    return capped_union(vectors.shape[0], u, v, s, max(1, max_size))
