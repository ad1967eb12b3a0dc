"""Step 4 of the grouping (:mod:`.grouping`): split connected components larger than ``max_group_size``.

:func:`split_large` puts the members of every large component in single-linkage
order of the verified links and cuts that order into balanced chunks;
:func:`refine_split` then re-splits each large component by size-capped single
linkage over all its pairs (embedding distance, else exact Jaccard similarity),
using the chunks only to cut components too large to compare all pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse import csr_matrix

from .lsh import THRESHOLD_EPS

__all__ = ["REFINE_LIMIT", "capped_union", "refine_split", "split_large"]

REFINE_LIMIT = 4096  # cuts of one coarse chunk compared all-pairs during refinement


def split_large(
    components: np.ndarray, links: tuple[np.ndarray, np.ndarray, np.ndarray], max_size: int
) -> tuple[np.ndarray, int]:
    """Split components larger than ``max_size`` into equal chunks of similar cuts.

    Members of a large component are put in single-linkage order (see
    :func:`_single_linkage_order`), in which every cluster of mutually linked,
    similar cuts is a contiguous run, and the order is cut into
    ``k = ceil(size / max_size)`` chunks whose sizes differ by at most one.
    """
    n = components.size
    component_sizes = np.bincount(components) if n else np.zeros(0, np.int64)
    large = component_sizes > max_size
    if not np.any(large):
        return components, 0
    members = np.flatnonzero(large[components])  # cuts of large components, in input order
    u, v, similarity = links
    inside = large[components[u]]
    local_u, local_v = np.searchsorted(members, u[inside]), np.searchsorted(members, v[inside])
    order = members[_single_linkage_order(members.size, local_u, local_v, similarity[inside])]
    chunk = np.zeros(n, np.int64)
    chunk[order] = _balanced_chunks(components[order], component_sizes, max_size)
    n_chunks = -(-component_sizes // max_size)
    return components * int(n_chunks.max()) + chunk, int(np.count_nonzero(large))


def _single_linkage_order(n: int, u: np.ndarray, v: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Order ``n`` nodes so that every single-linkage cluster of the links is contiguous.

    Kruskal's algorithm on the links, most similar first: each link that joins
    two clusters appends one cluster's node chain to the other's. Clusters only
    ever grow by concatenation, so at every similarity level each cluster is
    one contiguous run of the final chain (the leaf order of the single-linkage
    dendrogram). Connected components come out one after another, each
    starting with its first node. One Python step per link of the large
    components only.
    """
    parent = list(range(n))
    nxt = [-1] * n  # next node in its cluster's chain
    tail = list(range(n))  # last node of the chain headed by a root
    strongest_first = np.argsort(-similarity, kind="stable")
    for a, b in zip(u[strongest_first].tolist(), v[strongest_first].tolist()):
        a, b = _find(parent, a), _find(parent, b)
        if a == b:
            continue
        if b < a:  # the cluster with the smaller first node keeps the head
            a, b = b, a
        parent[b] = a
        nxt[tail[a]] = b
        tail[a] = tail[b]
    order: list[int] = []
    for head in range(n):
        if parent[head] == head:  # a root heads its chain; roots are visited in input order
            node = head
            while node != -1:
                order.append(node)
                node = nxt[node]
    return np.asarray(order, dtype=np.int64)


def _find(parent: list[int], node: int) -> int:
    """Root of ``node`` in a union-find forest, halving the path on the way."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def _balanced_chunks(component: np.ndarray, component_sizes: np.ndarray, max_size: int) -> np.ndarray:
    """Chunk of each position in the order: ``k = ceil(s / max_size)`` chunks, sizes differing by <= 1."""
    is_start = np.ones(component.size, bool)
    is_start[1:] = component[1:] != component[:-1]
    start = np.maximum.accumulate(np.where(is_start, np.arange(component.size), 0))
    position = np.arange(component.size) - start
    size = component_sizes[component]
    return position * (-(-size // max_size)) // size


def refine_split(
    components: np.ndarray,
    coarse: np.ndarray,
    incidence: csr_matrix,
    threshold: float,
    max_size: int,
    embeddings: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> np.ndarray:
    """Re-split large components so that the most similar cuts stay together.

    Word overlap alone cannot tell apart prompts of one template ("weather in
    boston today" / "weather in denver today" overlap as much as two readings
    of one prompt), so when ``embeddings`` are available the merges below are
    ordered by Euclidean distance between pooled embeddings instead: readings
    of the same words sound alike.

    The links LSH verified form a sparse forest (pairs already connected are not
    checked), too weak to decide where a large component should be cut. For each
    large component (pre-cut by :func:`split_large` into pieces of at most
    ``REFINE_LIMIT`` cuts), exact Jaccard similarities of all its pairs above
    the threshold are merged strongest first, refusing any merge that would
    exceed the balanced size ``ceil(s / ceil(s / max_size))`` (size-capped
    single linkage). The resulting clusters are packed into as few groups of at
    most ``max_size`` as first fit by decreasing size finds, so nothing
    tiny is left over that need not be.
    """
    labels = coarse.copy()
    sizes = np.bincount(components)
    large = np.flatnonzero(sizes > max_size)
    next_label = int(coarse.max()) + 1
    for component in large:
        members = np.flatnonzero(components == component)
        piece_of = coarse[members]
        if members.size > REFINE_LIMIT:  # keep the coarse pieces, refine each at most this big
            coarse_pieces = [members[piece_of == c] for c in np.unique(piece_of)]
            pieces = _regroup(coarse_pieces, max(REFINE_LIMIT, max_size))
        else:
            pieces = [members]
        for piece in pieces:
            vectors = None if embeddings is None else embeddings(piece)
            vectors = None if vectors is None else np.asarray(vectors, dtype=np.float64)
            for chunk in _capped_linkage(piece, incidence, threshold, max_size, vectors):
                labels[chunk] = next_label
                next_label += 1
    return labels


def _regroup(pieces: list[np.ndarray], limit: int) -> list[np.ndarray]:
    """Concatenate consecutive pieces while they fit in ``limit`` cuts."""
    out: list[np.ndarray] = []
    for piece in pieces:
        if out and out[-1].size + piece.size <= limit:
            out[-1] = np.concatenate([out[-1], piece])
        else:
            out.append(piece)
    return out


def _capped_linkage(
    members: np.ndarray, incidence: csr_matrix, threshold: float, max_size: int, vectors: np.ndarray | None = None
) -> list[np.ndarray]:
    """Size-capped single linkage (closest embeddings, else highest Jaccard, first), then first-fit packing."""
    u, v = np.triu_indices(members.size, k=1)
    if vectors is not None:
        squared = np.einsum("ij,ij->i", vectors, vectors)
        gram = vectors @ vectors.T
        w = -(squared[u] + squared[v] - 2 * gram[u, v])  # higher = closer
    else:
        sub = incidence[members].astype(np.float32)
        intersection = (sub @ sub.T).toarray()
        set_sizes = np.diag(intersection).copy()
        union = set_sizes[:, None] + set_sizes[None, :] - intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            similarity = np.where(union > 0, intersection / union, 0.0)
        keep = similarity[u, v] >= threshold - THRESHOLD_EPS
        u, v, w = u[keep], v[keep], similarity[u[keep], v[keep]]
    # merge up to the balanced size ceil(s / k), k = ceil(s / max_size): equal chunks when cuts are alike
    n_chunks = -(-members.size // max_size)
    cap = -(-members.size // n_chunks)
    roots = capped_union(members.size, u, v, w, cap)
    clusters = [members[roots == r] for r in np.unique(roots)]
    clusters.sort(key=lambda c: -c.size)
    bins: list[list[np.ndarray]] = []
    room: list[int] = []
    for cluster in clusters:
        for index, free in enumerate(room):
            if cluster.size <= free:
                bins[index].append(cluster)
                room[index] -= cluster.size
                break
        else:
            bins.append([cluster])
            room.append(max_size - cluster.size)
    return [np.sort(np.concatenate(b)) for b in bins]




_FIRST_ROUND = 4096  # pairs merged one by one before the first filter of the rest


def capped_union(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray, cap: int) -> np.ndarray:
    """Root of each of ``n`` nodes after merging the pairs ``(u[j], v[j])`` strongest ``w`` first (ties in
    input order), refusing any merge that would make a cluster larger than ``cap``; the smaller root heads
    a merged cluster.

    A pair is a no-op once its ends share a root or their clusters' sizes sum past ``cap``, and both stay
    true for every later pair, since clusters only grow. So the pairs are merged one by one in rounds of
    the strongest ones left (a partial sort), and after each round the pairs still to come are filtered
    with NumPy (roots of all nodes by pointer jumping): the result of one Python step per pair in a full
    sort, but the Python steps and the sorting are only for pairs that can still merge when their round
    starts. Rounds double from ``_FIRST_ROUND`` pairs, so there are O(log) filters.
    """
    parent = np.arange(n)
    size = np.ones(n, np.int64)
    index = np.arange(u.size)
    step = _FIRST_ROUND
    while index.size:
        if index.size > step:
            negative = -w[index]
            kth = np.partition(negative, step - 1)[step - 1]
            now = negative <= kth  # every pair tied with the step-th strongest joins this round
            taken, index = index[now], index[~now]
        else:
            taken, index = index, index[:0]
        taken = taken[np.lexsort((taken, -w[taken]))]  # strongest first, ties in input order
        parent_list, size_list = parent.tolist(), size.tolist()
        for a, b in zip(u[taken].tolist(), v[taken].tolist()):
            a, b = _find(parent_list, a), _find(parent_list, b)
            if a == b or size_list[a] + size_list[b] > cap:
                continue
            if b < a:
                a, b = b, a
            parent_list[b] = a
            size_list[a] += size_list[b]
        parent, size = _roots(np.asarray(parent_list)), np.asarray(size_list)
        ru, rv = parent[u[index]], parent[v[index]]
        index = index[(ru != rv) & (size[ru] + size[rv] <= cap)]
        step *= 2
    return _roots(parent)


def _roots(parent: np.ndarray) -> np.ndarray:
    """Every node's root in a union-find forest, by pointer jumping (``parent`` of a root is itself)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand
