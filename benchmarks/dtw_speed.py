"""DTW speed: choral's kernels against dtaidistance, measured in one run.

Cases (random float32 data, fixed seed):

1. N=500 series of length 256, no window (124,750 pairs), and the same with a
   Sakoe-Chiba radius of 25: dtaidistance ``dtw.distance_matrix_fast(...,
   parallel=True)`` vs choral ``cdist`` (compiled kernel and NumPy fallback).
2. N=500 series of length 512, no window.
3. Frames: N=200 sequences of 100 frames x 256 dims: dtaidistance
   ``dtw_ndim.distance_matrix_fast(..., parallel=True)`` vs choral.

Whatever would take too long (dtaidistance on the large cases, the NumPy
fallback everywhere) runs on the first n sequences only, and its time is
extrapolated per pair to the full case; such rows say "(N=n, extrapolated)".
The ratio column is the peer's (full or extrapolated) time over choral's.
Agreement is the largest relative difference against dtaidistance on the
pairs both computed.

    python benchmarks/dtw_speed.py            # about 2 minutes on 2 cores
    python benchmarks/dtw_speed.py --quick    # about 20 seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from choral.kernels import dtw

try:
    from dtaidistance import dtw as dtai
except ImportError:  # pragma: no cover - optional dependency ([bench] extra)
    dtai = None
try:
    from dtaidistance import dtw_ndim as dtai_ndim
except ImportError:  # pragma: no cover
    dtai_ndim = None


@dataclass
class Timing:
    seconds: float     # for the full case (extrapolated when subset < count)
    subset: int        # sequences actually run
    result: np.ndarray  # the (subset x subset) distance matrix


def pairs(count: int) -> int:
    return count * (count - 1) // 2


def band_cells(n: int, m: int, window: int | None) -> int:
    if window is None:
        return n * m
    return sum(max(0, min(m - 1, i + window) - max(0, i - window) + 1) for i in range(n))


def run(fn, data, count: int, subset: int, repeats: int = 1) -> Timing:
    """Time fn on the first `subset` sequences; extrapolate per pair to `count`."""
    part = data[:subset]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(part)
        best = min(best, time.perf_counter() - start)
    return Timing(best * pairs(count) / pairs(subset), subset, np.asarray(result, dtype=np.float64))


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    k = min(len(a), len(b))
    a, b = a[:k, :k], b[:k, :k]
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    scale = np.maximum(np.abs(b[finite]), 1e-12)
    return float(np.max(np.abs(a[finite] - b[finite]) / scale)) if finite.any() else 0.0


def label(name: str, timing: Timing, count: int) -> str:
    return name if timing.subset == count else f"{name} (N={timing.subset}, extrapolated)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller subsets for the slow parts (~20 s)")
    parser.add_argument("--n-jobs", type=int, default=None, help="threads for choral (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quick = args.quick
    rng = np.random.default_rng(args.seed)
    backends = dtw.available_backends()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"choral DTW benchmark: {platform.processor() or platform.machine()}, {cores} cores, "
          f"load average {load:.2f} at start")
    print(f"choral backends: {', '.join(backends)} (auto -> {dtw.auto_backend()}); "
          f"dtaidistance: {'yes' if dtai is not None else 'not installed'}")
    if "c" not in backends:
        print("WARNING: compiled kernel not built; only the NumPy fallback is measured")
    print()

    def choral(backend: str, window: int | None = None):
        return lambda part: dtw.cdist(part, window=window, backend=backend, n_jobs=args.n_jobs)

    rows: list[tuple[str, ...]] = []
    checks: list[str] = []

    def case(name: str, data, count: int, cells_per_pair: int, peer_name: str, peer_fn, peer_subset: int,
             numpy_subset: int, window: int | None = None) -> None:
        peer = run(peer_fn, data, count, peer_subset) if peer_fn is not None else None
        mine: list[tuple[str, Timing]] = []
        if "c" in backends:
            mine.append(("c", run(choral("c", window), data, count, count, repeats=1 if quick else 2)))
        mine.append(("numpy", run(choral("numpy", window), data, count, numpy_subset)))
        for backend, timing in mine:
            cells = pairs(count) * cells_per_pair / timing.seconds
            ratio = f"{peer.seconds / timing.seconds:8.1f}x" if peer is not None else "       -"
            rows.append((name, label(peer_name, peer, count) if peer else "-",
                         f"{peer.seconds:8.2f}" if peer else "       -",
                         label(backend, timing, count), f"{timing.seconds:8.2f}", f"{cells:9.2e}", ratio))
            if peer is not None:
                checks.append(f"{name}: choral {backend} vs {peer_name}: max rel diff "
                              f"{max_rel(timing.result, peer.result):.1e} over N={min(timing.subset, peer.subset)}")
        if len(mine) == 2:
            checks.append(f"{name}: choral numpy vs c: max rel diff "
                          f"{max_rel(mine[1][1].result, mine[0][1].result):.1e} over N={mine[1][1].subset}")

    # 1. N=500, length 256
    count = 500
    series = rng.standard_normal((count, 256)).astype(np.float32)
    series64 = series.astype(np.float64)
    peer = (lambda part: dtai.distance_matrix_fast(series64[:len(part)], parallel=True)) if dtai else None
    case("1-D N=500 len=256", series, count, 256 * 256, "dtaidistance", peer,
         120 if quick else count, 60 if quick else 120)
    window = 25
    peer_w = ((lambda part: dtai.distance_matrix_fast(series64[:len(part)], window=window + 1, parallel=True))
              if dtai else None)
    case(f"1-D N=500 len=256 r={window}", series, count, band_cells(256, 256, window), "dtaidistance", peer_w,
         150 if quick else count, 80 if quick else 150, window=window)

    # 2. N=500, length 512
    series = rng.standard_normal((count, 512)).astype(np.float32)
    series64 = series.astype(np.float64)
    peer = (lambda part: dtai.distance_matrix_fast(series64[:len(part)], parallel=True)) if dtai else None
    case("1-D N=500 len=512", series, count, 512 * 512, "dtaidistance", peer,
         80 if quick else 200, 40 if quick else 80)

    # 3. frames: N=200, 100 x 256
    count = 200
    frames = rng.standard_normal((count, 100, 256)).astype(np.float32)
    frames64 = frames.astype(np.float64)
    if dtai_ndim is not None and hasattr(dtai_ndim, "distance_matrix_fast"):
        peer = lambda part: dtai_ndim.distance_matrix_fast(frames64[:len(part)], parallel=True)  # noqa: E731
    else:
        peer = None
    case("frames N=200 100x256", frames, count, 100 * 100, "dtaidistance ndim", peer,
         30 if quick else 60, 20 if quick else 40)

    header = ("case", "peer", "peer s", "choral", "choral s", "cells/s", "vs peer")
    widths = [max(len(h), *(len(r[k].strip()) for r in rows)) for k, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.strip().ljust(w) if k < 2 or k == 3 else c.strip().rjust(w)
                        for k, (c, w) in enumerate(zip(r, widths))))
    print()
    print("agreement (float32 kernel: expect ~1e-6; frames use a float32 GEMM):")
    for line in checks:
        print("  " + line)
    print("cells/s: DP cells per second (the window band; n*m without a window); a frames cell is a\n"
          "256-dim squared distance.  Extrapolated rows scale the subset's time by the pair count.")


if __name__ == "__main__":
    main()
