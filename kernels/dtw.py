"""All-pairs dynamic time warping (DTW) for the graph stage.

Public API
----------
``cdist(xs, ys=None, *, window=None, backend="auto", n_jobs=None)``
    DTW distance between every pair of sequences: the symmetric N x N matrix of
    ``xs`` (each unordered pair computed once, zero diagonal), or the N x M
    matrix between ``xs`` and ``ys``.
``paired(xs, index_a, index_b, *, window=None, backend="auto", n_jobs=None)``
    DTW distances of explicit pairs ``(xs[index_a[k]], xs[index_b[k]])``.
``available_backends()`` / ``auto_backend()``
    The backends that can run here, and the one ``backend="auto"`` picks.

Semantics (identical to ``dtaidistance.dtw.distance_matrix_fast`` and tslearn's
``cdist_dtw`` defaults): step pattern symmetric1,

    D[i, j] = cost(i, j) + min(D[i-1, j], D[i, j-1], D[i-1, j-1])

with every cell's cost added once; the local cost is the squared difference
for 1-D sequences (a vector read as a time series) and the squared Euclidean
distance for 2-D ``(T, D)`` frame sequences; the distance is
``sqrt(D[n-1, m-1])``.  ``window=r`` is a Sakoe-Chiba radius: only cells with
``|i - j| <= r`` are allowed (dtaidistance's ``window=r+1``), so pairs with
``|n - m| > r`` are at distance ``+inf``.

Backends
--------
``"c"``      the compiled kernel ``choral.kernels._dtw_simd``: blocks of LANES
             pairs run in lock-step in the SIMD lanes, in float32, one thread
             per core (ctypes releases the GIL).
``"numpy"``  pure NumPy, float64 (:mod:`choral.kernels.dtw_numpy`): a few
             hundred pairs at once, swept by anti-diagonals (every cell of an
             anti-diagonal, of every pair, is one vectorised update).
``"auto"``   ``"c"`` when the kernel is built, else ``"numpy"``; the
             environment variable ``CHORAL_DTW_BACKEND`` (``c`` or ``numpy``)
             overrides it.

Frame sequences (both backends) take their local costs from a float32 GEMM,
``|x|^2 + |y|^2 - 2 x.y`` clipped at 0, over frames centred on their mean; one
GEMM covers a tile of pairs.  Its rounding gives an absolute error of about
``sqrt(T * 1e-7 * |x|^2)`` on a distance, visible only for near-identical
sequences (a sequence paired with itself is exactly 0).  While frame tiles run,
BLAS is held to one thread per worker (threadpoolctl; restored afterwards).

Which backend ran, and on how many threads, is logged at debug level.

The C backend agrees with float64 references to ~1e-6 relative (float32
accumulation); inputs must fit in float32.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from threadpoolctl import ThreadpoolController

from . import dtw_numpy, threads
from .components import component_labels

__all__ = ["ENV_BACKEND", "auto_backend", "available_backends", "cdist", "paired"]

ENV_BACKEND = "CHORAL_DTW_BACKEND"
_BACKENDS = ("c", "numpy")

_log = logging.getLogger(__name__)

# Pairs handled per chunk (bounds the memory of index/sort arrays).
_CHUNK_PAIRS = 1 << 21
# Frames: at most this many frames per chunk of consecutive sequences; a
# tile's Gram block (float32) is then at most about 2048 x 2048 (16 MB).
_FRAME_BUDGET = 2048


# --------------------------------------------------------------------------
# compiled kernel
# --------------------------------------------------------------------------

class _Kernel:
    """The ctypes view of ``_dtw_simd``'s C entry points."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        self.series = lib.choral_dtw_series
        self.series.restype = ctypes.c_int
        self.series.argtypes = [p, p, p, p, p, i64, i64, i64, i64, p]
        self.gram = lib.choral_dtw_gram
        self.gram.restype = ctypes.c_int
        self.gram.argtypes = [p, p, i64, p, p, p, p, p, i64, i64, i64, i64, p]
        lanes = lib.choral_dtw_lanes
        lanes.restype = i64
        lanes.argtypes = []
        self.lanes = int(lanes())
        self.path = path
        self._lib = lib  # keep the library loaded


_kernel: _Kernel | None = None
_kernel_error: str | None = None
_kernel_loaded = False
_kernel_lock = threading.Lock()


def _load_kernel() -> _Kernel | None:
    global _kernel, _kernel_error, _kernel_loaded
    if _kernel_loaded:
        return _kernel
    with _kernel_lock:
        if not _kernel_loaded:
            try:
                spec = importlib.util.find_spec(f"{__package__ or 'choral.kernels'}._dtw_simd")
                if spec is None or not spec.origin or not os.path.isfile(spec.origin):
                    raise ImportError("extension module choral.kernels._dtw_simd is not built")
                _kernel = _Kernel(spec.origin)
            except (ImportError, OSError, AttributeError, ValueError) as error:
                _kernel, _kernel_error = None, str(error)
                _log.debug("compiled DTW kernel unavailable: %s", error)
            _kernel_loaded = True
    return _kernel


def available_backends() -> tuple[str, ...]:
    """Backends usable in this environment, best first (``"numpy"`` always is)."""
    return ("c", "numpy") if _load_kernel() is not None else ("numpy",)


def auto_backend() -> str:
    """The backend ``backend="auto"`` resolves to (honours ``CHORAL_DTW_BACKEND``)."""
    forced = os.environ.get(ENV_BACKEND, "").strip().lower()
    if forced:
        if forced not in _BACKENDS:
            raise ValueError(f"{ENV_BACKEND}={os.environ[ENV_BACKEND]!r} is not one of {', '.join(_BACKENDS)}")
        return _resolve(forced)
    return "c" if _load_kernel() is not None else "numpy"


def _resolve(backend: str) -> str:
    if backend == "auto":
        return auto_backend()
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be 'auto', 'c' or 'numpy', got {backend!r}")
    if backend == "c" and _load_kernel() is None:
        raise RuntimeError(
            "the compiled DTW kernel (choral.kernels._dtw_simd) is not available "
            f"({_kernel_error}); rebuild it with `pip install -e .` (needs a C compiler) "
            "or use backend='numpy'"
        )
    return backend


class _BlasPin:
    """Pin BLAS to one thread while frame tiles run (one GEMM per worker thread).

    Each worker thread runs its own single-threaded GEMM; letting BLAS start
    its own threads on top oversubscribes the cores.  BLAS thread counts are
    process-wide, so they are set to 1 (threadpoolctl) for the duration of the
    outermost frames computation, then restored.  Where no BLAS library can be
    controlled, the GEMMs are serialised instead (:attr:`gemm_lock`) and BLAS's
    own threads do the parallel part.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter = None
        self.pinned = False  # True while BLAS is held to one thread
        self.gemm_lock = threading.Lock()

    def __enter__(self) -> _BlasPin:
        with self._lock:
            if self._users == 0:
                blas = ThreadpoolController().select(user_api="blas")
                if blas.lib_controllers:
                    self._limiter = blas.limit(limits=1)
                    self.pinned = True
            self._users += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter, self.pinned = None, False


_blas = _BlasPin()


def _n_threads(n_jobs: int | None) -> int:
    """Worker threads: ``n_jobs``, or the process's thread budget (:mod:`.threads`) for None, or every
    core it may use for -1."""
    if n_jobs is None:
        return threads.budget()
    if n_jobs == -1:
        return threads.available_cores()
    if not isinstance(n_jobs, Integral) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive integer, -1 or None, got {n_jobs!r}")
    return int(n_jobs)


# --------------------------------------------------------------------------
# input validation and the sequence pool
# --------------------------------------------------------------------------

def _check_sequences(seqs: object, name: str, ndim: int | None = None,
                     dim: int | None = None) -> list[np.ndarray]:
    """Validate a collection of sequences; returns them as numeric arrays."""
    if isinstance(seqs, np.ndarray):
        if seqs.ndim not in (2, 3):
            raise ValueError(f"{name} as one array must be 2-D (N series) or 3-D (N frame sequences), "
                             f"got shape {seqs.shape}")
        items: Sequence[object] = list(seqs)
    else:
        try:
            items = list(seqs)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(f"{name} must be a sequence of arrays, got {type(seqs).__name__}") from None
    out: list[np.ndarray] = []
    for k, item in enumerate(items):
        arr = np.asarray(item)
        where = f"{name}[{k}]"
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{where} must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim not in (1, 2):
            raise ValueError(f"{where} must be 1-D (a series) or 2-D (T, D) frames, got shape {arr.shape}")
        if ndim is None:
            ndim = arr.ndim
        elif arr.ndim != ndim:
            raise ValueError(f"{where} is {arr.ndim}-D but the other sequences are {ndim}-D; "
                             "all sequences must have the same ndim")
        if arr.shape[0] == 0:
            raise ValueError(f"{where} is empty")
        if arr.ndim == 2:
            if arr.shape[1] == 0:
                raise ValueError(f"{where} has frames of dimension 0")
            if dim is None:
                dim = arr.shape[1]
            elif arr.shape[1] != dim:
                raise ValueError(f"{where} has frame dimension {arr.shape[1]} but the other sequences "
                                 f"have {dim}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{where} contains NaN or inf")
        out.append(arr)
    return out


@dataclass
class _Pool:
    """Sequences stored back to back (float32 for the kernel, float64 for NumPy series)."""

    frames: bool
    data: np.ndarray      # (F,) series or (F, D) frames
    offsets: np.ndarray   # int64 (S,)
    lengths: np.ndarray   # int64 (S,)
    norms: np.ndarray | None  # float32 (F,) squared frame norms

    @classmethod
    def build(cls, seqs: list[np.ndarray], dtype: type, names: list[str]) -> _Pool:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        frames = bool(seqs) and seqs[0].ndim == 2
        if seqs:
            data = np.concatenate([np.asarray(s, dtype=dtype) for s in seqs])
        else:
            data = np.zeros(0, dtype=dtype)
        if not np.isfinite(data).all():
            bad = int(np.searchsorted(offsets, np.flatnonzero(~np.isfinite(data.reshape(len(data), -1)).all(1))[0],
                                      side="right")) - 1
            raise ValueError(f"{names[bad]} has values too large for {np.dtype(dtype).name}")
        norms = None
        if frames:
            # Distances are translation invariant; centring the frames shrinks
            # |x|^2 and with it the cancellation error of |x|^2 + |y|^2 - 2 x.y.
            data -= data.mean(axis=0, dtype=np.float64).astype(data.dtype)
            norms = np.einsum("ij,ij->i", data, data, dtype=np.float64).astype(np.float32)
            if not np.isfinite(norms).all():
                bad = int(np.searchsorted(offsets, np.flatnonzero(~np.isfinite(norms))[0], side="right")) - 1
                raise ValueError(f"{names[bad]} has frames whose squared norm overflows float32")
        return cls(frames, data, offsets, lengths, norms)


def _check_window(window: object) -> int:
    """-1 for no window, else the radius."""
    if window is None:
        return -1
    if isinstance(window, bool) or not isinstance(window, Integral):
        raise TypeError(f"window must be a non-negative integer or None, got {window!r}")
    if window < 0:
        raise ValueError(f"window must be >= 0 (a Sakoe-Chiba radius), got {window}")
    return int(window)


def _check_index(index: object, name: str, count: int) -> np.ndarray:
    arr = np.asarray(index)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= count):
        bad = int(np.flatnonzero((arr < 0) | (arr >= count))[0])
        raise IndexError(f"{name}[{bad}] = {arr[bad]} is out of range for {count} sequences")
    return arr


# --------------------------------------------------------------------------
# the pair engine
# --------------------------------------------------------------------------

class _Engine:
    """Computes DTW for lists of pairs of one pool with one backend."""

    def __init__(self, seqs: list[np.ndarray], names: list[str], window: int, backend: str,
                 n_jobs: int | None, components: np.ndarray | None = None) -> None:
        self.backend = _resolve(backend)
        self.kernel = _load_kernel() if self.backend == "c" else None
        self.window = window
        self.threads = _n_threads(n_jobs)
        frames = bool(seqs) and seqs[0].ndim == 2
        dtype = np.float32 if (self.backend == "c" or frames) else np.float64
        # Frame sequences are stored grouped by connected component of the pair
        # graph (pool_order[p] = original index of stored sequence p), so that a
        # tile's Gram matrix covers pairs of one component; self.slot maps an
        # original index to its stored position.
        self.components: np.ndarray | None = None
        self.slot: np.ndarray | None = None
        if components is not None:
            pool_order = np.lexsort((np.arange(len(components)), components))
            self.components = components[pool_order]
            seqs = [seqs[k] for k in pool_order]
            names = [names[k] for k in pool_order]
            self.slot = np.empty(len(pool_order), dtype=np.int64)
            self.slot[pool_order] = np.arange(len(pool_order))
        self.pool = _Pool.build(seqs, dtype, names)
        self._executor: ThreadPoolExecutor | None = None
        _log.debug("DTW backend %s, %d thread(s), %d %s", self.backend, self.threads, len(seqs),
                   "frame sequences" if frames else "series")

    def __enter__(self) -> _Engine:
        if self.threads > 1:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="choral-dtw")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown()

    def _map(self, fn, items: list) -> list:
        if self._executor is None or len(items) <= 1:
            return [fn(item) for item in items]
        return list(self._executor.map(fn, items))

    def run(self, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
        """Distances of pairs (pa[k], pb[k]) (original sequence indices)."""
        out = np.full(len(pa), np.inf)
        if len(pa) == 0:
            return out
        if self.slot is not None:
            pa, pb = self.slot[pa], self.slot[pb]
        n, m = self.pool.lengths[pa], self.pool.lengths[pb]
        live = pa != pb  # a sequence is at distance 0 from itself
        out[~live] = 0.0
        if self.window >= 0:
            live &= np.abs(n - m) <= self.window
        if not live.all():
            sel = np.flatnonzero(live)
            out[sel] = self._run(pa[sel], pb[sel])
        else:
            out[:] = self._run(pa, pb)
        return out

    def _run(self, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
        if len(pa) == 0:
            return np.zeros(0)
        if self.pool.frames:
            return self._frames(pa, pb)
        # 1-D: orient pairs so n >= m (DTW is symmetric), sort by (n, m) so a
        # block's lanes have nearly equal shapes.
        n, m = self.pool.lengths[pa], self.pool.lengths[pb]
        swap = n < m
        a = np.where(swap, pb, pa)
        b = np.where(swap, pa, pb)
        n, m = np.maximum(n, m), np.minimum(n, m)
        order = np.lexsort((m, n))
        a, b = np.ascontiguousarray(a[order]), np.ascontiguousarray(b[order])
        res = np.empty(len(a))
        if self.backend == "c":
            self._series_c(a, b, res)
        else:
            self._series_np(a, b, res)
        out = np.empty(len(a))
        out[order] = res
        return out

    # ---- 1-D, compiled ---------------------------------------------------
    def _series_c(self, a: np.ndarray, b: np.ndarray, res: np.ndarray) -> None:
        kernel, pool = self.kernel, self.pool
        assert kernel is not None  # backend "c" loaded it
        nblocks = -(-len(a) // kernel.lanes)
        steps = max(1, min(self.threads, nblocks))

        def work(start: int) -> int:
            return kernel.series(pool.data.ctypes.data, pool.offsets.ctypes.data, pool.lengths.ctypes.data,
                                 a.ctypes.data, b.ctypes.data, len(a), self.window, start, steps,
                                 res.ctypes.data)

        if any(rc != 0 for rc in self._map(work, list(range(steps)))):
            raise MemoryError("DTW kernel could not allocate its scratch buffers")

    # ---- 1-D, NumPy ------------------------------------------------------
    def _series_np(self, a: np.ndarray, b: np.ndarray, res: np.ndarray) -> None:
        pool = self.pool
        dtw_numpy.series(pool.data, pool.offsets, pool.lengths, a, b, self.window, self._map, res)

    # ---- frames (both backends) -------------------------------------------
    def _frames(self, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
        """Tile the pairs by (chunk of a, chunk of b); one GEMM per tile.

        Stored sequences are cut into chunks of consecutive sequences with at
        most _FRAME_BUDGET frames, never spanning two connected components of
        the pair graph.  A tile's Gram matrix is the product of two contiguous
        slices of the frame pool, so no frames are copied.  Pairs are oriented
        a <= b; a tile on the diagonal (a and b in the same chunk) would compute
        its full square for the upper triangle only, so those pairs are tiled
        again with chunks a quarter that size.
        """
        a, b = np.minimum(pa, pb), np.maximum(pa, pb)  # DTW is symmetric
        fine, coarse = self._chunks()
        diag = coarse[a] == coarse[b]
        ka = np.where(diag, fine[a], coarse[a])
        kb = np.where(diag, fine[b], coarse[b])
        order = np.lexsort((b, a, kb, ka, diag))
        a, b, ka, kb, diag = a[order], b[order], ka[order], kb[order], diag[order]
        cut = np.flatnonzero((ka[1:] != ka[:-1]) | (kb[1:] != kb[:-1]) | (diag[1:] != diag[:-1])) + 1
        items = list(zip(np.r_[0, cut].tolist(), np.r_[cut, len(a)].tolist()))
        # biggest tiles first, so the threads finish together
        items.sort(key=lambda item: item[0] - item[1])
        res = np.empty(len(a))
        fn = self._tile_c if self.backend == "c" else self._tile_np
        with _blas:
            self._map(lambda item: fn(a, b, item[0], item[1], res), items)
        out = np.empty(len(a))
        out[order] = res
        return out

    _chunk_ids: tuple[np.ndarray, np.ndarray] | None = None

    def _chunks(self) -> tuple[np.ndarray, np.ndarray]:
        """(fine, coarse) chunk id of every stored sequence; coarse chunks are
        unions of whole fine chunks."""
        if self._chunk_ids is None:
            lengths = self.pool.lengths.tolist()
            comp = self.components.tolist() if self.components is not None else None
            fine = np.empty(len(lengths), dtype=np.int64)
            coarse = np.empty(len(lengths), dtype=np.int64)
            fid = cid = facc = cacc = 0
            fine_budget = max(1, _FRAME_BUDGET // 4)
            for s, n in enumerate(lengths):
                if s:
                    new_comp = comp is not None and comp[s] != comp[s - 1]
                    if new_comp or facc + n > fine_budget:
                        fid, facc = fid + 1, 0
                        if new_comp or cacc + n > _FRAME_BUDGET:
                            cid, cacc = cid + 1, 0
                fine[s], coarse[s] = fid, cid
                facc += n
                cacc += n
            self._chunk_ids = (fine, coarse)
        return self._chunk_ids

    def _tile_gram(self, a: np.ndarray, b: np.ndarray, s: int, e: int):
        """Gram matrix of the tile's row frames against its column frames."""
        pool = self.pool
        off, ln = pool.offsets, pool.lengths
        a0, a1 = int(a[s:e].min()), int(a[s:e].max())
        b0, b1 = int(b[s:e].min()), int(b[s:e].max())
        r0, r1 = int(off[a0]), int(off[a1] + ln[a1])
        c0, c1 = int(off[b0]), int(off[b1] + ln[b1])
        if _blas.pinned or self._executor is None:
            g = np.matmul(pool.data[r0:r1], pool.data[c0:c1].T)
        else:
            with _blas.gemm_lock:  # BLAS threads itself; run one GEMM at a time
                g = np.matmul(pool.data[r0:r1], pool.data[c0:c1].T)
        go = (off[a[s:e]] - r0) * g.shape[1] + (off[b[s:e]] - c0)
        return g, go

    def _tile_c(self, a: np.ndarray, b: np.ndarray, s: int, e: int, res: np.ndarray) -> None:
        kernel, pool = self.kernel, self.pool
        assert kernel is not None and pool.norms is not None  # backend "c", frame sequences
        g, go = self._tile_gram(a, b, s, e)
        ta, tb = a[s:e], b[s:e]
        n, m = pool.lengths[ta], pool.lengths[tb]
        srt = np.lexsort((m, n))  # similar shapes share a block
        go, n, m = go[srt], n[srt], m[srt]
        xo, yo = pool.offsets[ta[srt]], pool.offsets[tb[srt]]
        out = np.empty(e - s)
        rc = kernel.gram(g.ctypes.data, go.ctypes.data, g.shape[1], pool.norms.ctypes.data,
                         xo.ctypes.data, yo.ctypes.data, n.ctypes.data, m.ctypes.data, e - s,
                         self.window, 0, 1, out.ctypes.data)
        if rc != 0:
            raise MemoryError("DTW kernel could not allocate its scratch buffers")
        res[s + srt] = out

    def _tile_np(self, a: np.ndarray, b: np.ndarray, s: int, e: int, res: np.ndarray) -> None:
        pool = self.pool
        assert pool.norms is not None  # frame sequences
        g, go = self._tile_gram(a, b, s, e)
        res[s:e] = dtw_numpy.frame_tile(g, go, pool.norms, pool.offsets, pool.lengths, a[s:e], b[s:e],
                                        self.window)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def cdist(xs, ys=None, *, window: int | None = None, backend: str = "auto",
          n_jobs: int | None = None) -> np.ndarray:
    """All-pairs DTW distances (float64).

    xs, ys: sequences of 1-D arrays (series) or of 2-D ``(T, D)`` arrays (frame
    sequences); all of one call must have the same ndim (and D).  A 2-D array
    is read as N series, a 3-D array as N frame sequences.
    With ``ys=None`` returns the symmetric ``(N, N)`` matrix of ``xs`` (each
    unordered pair computed once, zero diagonal), else the ``(N, M)`` matrix.
    window: Sakoe-Chiba radius (cells with ``|i - j| <= window``), ``None`` for
    none; pairs with ``|n - m| > window`` are ``inf``.
    backend: ``"auto"``, ``"c"`` or ``"numpy"``.  n_jobs: threads (default: the
    process's thread budget, :func:`choral.kernels.threads.budget`; -1: every core it may use).
    """
    w = _check_window(window)
    xs_ = _check_sequences(xs, "xs")
    ndim = xs_[0].ndim if xs_ else None
    dim = xs_[0].shape[1] if xs_ and ndim == 2 else None
    resolved = _resolve(backend)
    if ys is None:
        count = len(xs_)
        out = np.zeros((count, count))
        if count < 2:
            return out
        with _Engine(xs_, [f"xs[{k}]" for k in range(count)], w, resolved, n_jobs) as engine:
            for pa, pb in _triangle_chunks(count, xs_):
                d = engine.run(pa, pb)
                out[pa, pb] = d
                out[pb, pa] = d
        return out
    ys_ = _check_sequences(ys, "ys", ndim=ndim, dim=dim)
    count, other = len(xs_), len(ys_)
    out = np.zeros((count, other))
    if count == 0 or other == 0:
        return out
    names = [f"xs[{k}]" for k in range(count)] + [f"ys[{k}]" for k in range(other)]
    with _Engine(xs_ + ys_, names, w, resolved, n_jobs) as engine:
        rows = max(1, _CHUNK_PAIRS // other)
        for a0 in range(0, count, rows):
            a1 = min(count, a0 + rows)
            pa = np.repeat(np.arange(a0, a1, dtype=np.int64), other)
            pb = np.tile(np.arange(other, dtype=np.int64), a1 - a0)
            out[a0:a1] = engine.run(pa, pb + count).reshape(a1 - a0, other)
    return out


def paired(xs, index_a, index_b, *, window: int | None = None, backend: str = "auto",
           n_jobs: int | None = None) -> np.ndarray:
    """DTW distances (float64) of the pairs ``(xs[index_a[k]], xs[index_b[k]])``.

    Same sequences, window, backend and n_jobs conventions as :func:`cdist`;
    runs on the same kernels at the same speed per pair.
    """
    w = _check_window(window)
    xs_ = _check_sequences(xs, "xs")
    pa = _check_index(index_a, "index_a", len(xs_))
    pb = _check_index(index_b, "index_b", len(xs_))
    if len(pa) != len(pb):
        raise ValueError(f"index_a and index_b differ in length ({len(pa)} != {len(pb)})")
    resolved = _resolve(backend)
    if len(pa) == 0:
        return np.zeros(0)
    components = None
    if xs_[0].ndim == 2:
        components = component_labels(len(xs_), pa, pb)
    out = np.empty(len(pa))
    with _Engine(xs_, [f"xs[{k}]" for k in range(len(xs_))], w, resolved, n_jobs,
                 components=components) as engine:
        for k0 in range(0, len(pa), _CHUNK_PAIRS):
            k1 = min(len(pa), k0 + _CHUNK_PAIRS)
            out[k0:k1] = engine.run(pa[k0:k1], pb[k0:k1])
    return out


def _triangle_chunks(count: int, seqs: list[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs a < b of the upper triangle, a few rows at a time."""
    a0 = 0
    while a0 < count - 1:
        # rows a0..a1-1 hold sum(count - 1 - a) pairs
        a1 = a0 + 1
        total = count - 1 - a0
        while a1 < count - 1 and total + (count - 1 - a1) <= _CHUNK_PAIRS:
            total += count - 1 - a1
            a1 += 1
        rows = np.arange(a0, a1, dtype=np.int64)
        per = count - 1 - rows
        pa = np.repeat(rows, per)
        first = np.repeat(np.cumsum(per) - per, per)
        pb = np.arange(len(pa), dtype=np.int64) - first + pa + 1
        yield pa, pb
        a0 = a1
