"""The NumPy backend of :mod:`choral.kernels.dtw` (float64, no compiler needed).

A few hundred pairs run at once, swept by anti-diagonals: every cell of an
anti-diagonal, of every pair, is one vectorised update (:func:`wavefront`).
A row-by-row min-plus scan (cumsum + ``minimum.accumulate``) would instead be
bound by NumPy's sequential accumulate loops.

:mod:`choral.kernels.dtw` owns the sequence pool, the tiling of frame pairs and
the threads; the functions here compute the distances of the pairs they are given.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["frame_tile", "series"]

# Lanes per batch, about _LANE_CELLS / rows (keeps the wavefront arrays in cache).
_LANE_CELLS = 1 << 16
_MAX_LANES = 2048

# cost(d, i0, i1, out): the (i1 - i0 + 1, k) local costs of cells (i, d - i), i0 <= i <= i1
CostFn = Callable[[int, int, int, np.ndarray], np.ndarray]


def series(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, a: np.ndarray, b: np.ndarray,
           window: int, map_fn: Callable[[Callable, list], list], res: np.ndarray) -> None:
    """DTW of 1-D series pairs ``(a[k], b[k])`` of the pool ``data`` into ``res[k]``.

    Sequence ``s`` is ``data[offsets[s]:offsets[s] + lengths[s]]``; ``window`` is
    the Sakoe-Chiba radius (-1: none). Pairs should be sorted by shape so that a
    batch's lanes have nearly equal lengths; ``map_fn(fn, items)`` runs the
    batches (in threads or not).
    """
    # cells per anti-diagonal and lane: at most the rows, and about the band
    rows = lengths[a] if window < 0 else np.minimum(lengths[a], window + 1)
    spans = _batches(rows, len(a))

    def work(span: tuple[int, int]) -> None:
        lo, hi = span
        n, m = lengths[a[lo:hi]], lengths[b[lo:hi]]
        x = _lane_major(data, offsets[a[lo:hi]], n)            # (nmax, k)
        yr = _lane_major(data, offsets[b[lo:hi]], m)[::-1]      # (mmax, k), reversed
        top = yr.shape[0] - 1

        def cost(d: int, i0: int, i1: int, out: np.ndarray) -> np.ndarray:
            # cells (i, d - i), i in [i0, i1]; y_{d-i} = yr[top - d + i]
            np.subtract(x[i0:i1 + 1], yr[top - d + i0:top - d + i1 + 1], out=out)
            return np.multiply(out, out, out=out)

        res[lo:hi] = wavefront(cost, n, m, window)

    map_fn(work, spans)


def frame_tile(gram: np.ndarray, gram_offsets: np.ndarray, norms: np.ndarray, offsets: np.ndarray,
               lengths: np.ndarray, ta: np.ndarray, tb: np.ndarray, window: int) -> np.ndarray:
    """DTW of the frame-sequence pairs ``(ta[k], tb[k])`` of one tile, from its Gram matrix.

    ``gram`` holds the dot products of the tile's row frames with its column
    frames; pair ``k``'s block starts at flat index ``gram_offsets[k]``.
    ``norms`` are the pool's squared frame norms, so the local cost is
    ``|x|^2 + |y|^2 - 2 x.y`` clipped at 0.
    """
    n, m = lengths[ta], lengths[tb]
    nmax, mmax = int(n.max()), int(m.max())
    i = np.arange(nmax)[:, None, None]
    j = np.arange(mmax)[None, :, None]
    vi, vj = i < n, j < m                                          # (nmax, 1, k), (1, mmax, k)
    xn = norms[np.where(vi, offsets[ta] + i, 0)]
    yn = norms[np.where(vj, offsets[tb] + j, 0)]
    gij = gram.ravel()[gram_offsets + np.where(vi, i, 0) * gram.shape[1] + np.where(vj, j, 0)]
    # lane-major costs [i][j][lane]; padded cells are 0 (they never reach a result)
    cost = xn.astype(np.float64) + yn - 2.0 * gij.astype(np.float64)
    np.maximum(cost, 0.0, out=cost)
    cost *= vi & vj
    flat = cost.reshape(nmax * mmax, len(n))
    step = max(1, mmax - 1)

    def cells(d: int, i0: int, i1: int, out: np.ndarray) -> np.ndarray:
        # cell (i, d - i) is flat row i * mmax + d - i: a constant stride of mmax - 1
        start = i0 * mmax + d - i0
        return flat[start:start + (i1 - i0) * step + 1:step]

    return wavefront(cells, n, m, window)


def _batches(n: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Consecutive spans of pairs for the DP: about _LANE_CELLS lanes x n each."""
    spans = []
    start = 0
    while start < count:
        lanes = min(_MAX_LANES, max(16, _LANE_CELLS // max(1, int(n[start]))))
        spans.append((start, min(count, start + lanes)))
        start += lanes
    return spans


def _lane_major(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(max length, k) float64 array of k sequences, zero padded."""
    t = np.arange(int(lengths.max()))[:, None]
    valid = t < lengths
    out = data[np.where(valid, offsets + t, 0)].astype(np.float64)
    out[~valid] = 0.0
    return out


def wavefront(cost: CostFn, n: np.ndarray, m: np.ndarray, window: int) -> np.ndarray:
    """DTW of k pairs at once by anti-diagonal wavefront, vectorised over cells and lanes.

    Cells (i, j) with i + j = d depend only on diagonals d - 1 (up, left) and
    d - 2 (diagonal), so a whole anti-diagonal of every lane is one set of
    array operations.  Arrays are lane-major: diagonal d is stored as
    ``diag[i + 1, lane]`` (index 0 is row -1).  cost(d, i0, i1, out) returns
    the (i1 - i0 + 1, k) costs of cells (i, d - i), i0 <= i <= i1.
    """
    k = len(n)
    nmax, mmax = int(n.max()), int(m.max())
    w = nmax + mmax if window < 0 else window
    inf = np.inf
    d2, d1, d0 = (np.full((nmax + 2, k), inf) for _ in range(3))
    d2[0] = 0.0  # D[-1, -1] on diagonal -2
    scratch = np.empty((nmax, k))
    best = np.empty((nmax, k))
    res = np.full(k, inf)
    ends = n + m - 2  # each lane's end cell (n-1, m-1) is on this diagonal
    order = np.argsort(ends, kind="stable")
    sorted_ends = ends[order]
    for d in range(int(ends.max()) + 1):
        i0 = max(0, d - (mmax - 1), (d - w + 1) // 2)   # j < mmax and |i - j| <= w
        i1 = min(nmax - 1, d, (d + w) // 2)             # j >= 0
        if i0 <= i1:
            rows = i1 - i0 + 1
            c = cost(d, i0, i1, scratch[:rows])
            t = best[:rows]
            np.minimum(d1[i0:i1 + 1], d1[i0 + 1:i1 + 2], out=t)   # up (i-1, j), left (i, j-1)
            np.minimum(t, d2[i0:i1 + 1], out=t)                 # diagonal (i-1, j-1)
            np.add(t, c, out=d0[i0 + 1:i1 + 2])
        # the cells bordering this diagonal's band are read by the next two
        d0[i0] = inf
        if i1 + 2 <= nmax + 1:
            d0[i1 + 2] = inf
        f0, f1 = np.searchsorted(sorted_ends, (d, d + 1))
        if f1 > f0:
            done = order[f0:f1]
            res[done] = np.sqrt(d0[n[done], done])
        d2, d1, d0 = d1, d0, d2
    return res
