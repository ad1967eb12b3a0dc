"""Connected components of an undirected graph given as an edge list.

Used by the grouping (cuts linked by verified word-set overlaps) and by the DTW
engine (sequences linked by the pairs asked for, so that frame tiles stay inside
one component).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["component_labels"]


def component_labels(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected-component label (int64) of each of ``n`` nodes under undirected edges ``u - v``.

    Labels are scipy's: numbered ``0..k-1`` in order of each component's smallest node.
    """
    # int32 weights: duplicate edges are summed, which must not wrap around to zero.
    graph = coo_matrix((np.ones(len(u), np.int32), (u, v)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)
