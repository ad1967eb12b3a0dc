"""Time ``label_spreading`` / ``label_propagation`` (block CG) against fixed-point iteration.

The graph imitates choral's cut graph: block-diagonal groups of 10-200 nodes, each
an Erdos-Renyi block dense enough for an average degree of about 22, with
weights in [0.05, 1], plus about 2% singleton (isolated) nodes. ``Y`` has 10
label columns: 10% of the nodes (``--labelled``) carry a peaked random label
distribution, the others zero rows; the labelled nodes are the clamped ones.

Compared, per problem, to the same tolerance (relative residual of the linear
system per column <= ``--tol``):

* ``block CG``: the functions of ``choral.kernels.propagation``;
* ``scipy cg/col``: ``scipy.sparse.linalg.cg`` once per column (same operator,
  Jacobi preconditioner for propagation), to check that the block solver pays;
* ``fixed point``: the scikit-learn-style iteration, the named peer.
  Spreading: ``F <- alpha S F + (1 - alpha) Y`` from ``F = (1 - alpha) Y``; its
  update ``F_new - F`` *is* the residual of ``(I - alpha S) F = (1 - alpha) Y``,
  so stopping on it is the same criterion as CG's. Propagation:
  ``F <- D^{-1} W F`` with the clamped rows (and the rows of components that
  hold no clamped node, which keep their prior as in ``label_propagation``)
  reset to ``Y`` after every step; its residual on the free rows is
  ``d * (F_new - F)``.

Reported: seconds, iterations, the largest absolute difference from the block
CG solution and from a reference (block CG at ``tol * 1e-4``, untimed), and the
time relative to block CG.

BLAS is pinned to one thread (``OPENBLAS_NUM_THREADS`` etc., unless already set).

Usage: ``python benchmarks/propagation_speed.py [--quick] [--nodes 50000] [--alpha 0.99]``.
"""

from __future__ import annotations

import os

# Single-threaded BLAS unless the caller says otherwise: every solver here spends its
# time in (single-threaded) sparse products, and on a small shared machine OpenBLAS's
# threaded level-1 calls inside scipy's cg spin against other processes and make it
# up to 10x slower, which would flatter the block solver. Set before numpy loads.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from scipy.sparse.csgraph import connected_components  # noqa: E402
from scipy.sparse.linalg import LinearOperator, cg  # noqa: E402

from choral.kernels import propagation  # noqa: E402
from choral.kernels.propagation import label_propagation, label_spreading  # noqa: E402

# --- problem -----------------------------------------------------------------------------


@dataclass
class Problem:
    """Adjacency, prior and clamped mask of one benchmark run."""

    W: sp.csr_array
    Y: np.ndarray
    clamped: np.ndarray


def block_graph(n: int, degree: float, rng: np.random.Generator, isolated: float = 0.02) -> sp.csr_array:
    """Block-diagonal random graph: groups of 10-200 nodes, ~``degree`` neighbours, some singletons."""
    singletons = int(round(isolated * n))
    sizes = [1] * singletons
    total = singletons
    while total < n:
        size = min(int(rng.integers(10, 201)), n - total)
        sizes.append(size)
        total += size
    sizes = [sizes[i] for i in rng.permutation(len(sizes))]  # singletons between the groups
    rows, cols = [], []
    start = 0
    for size in sizes:
        if size > 1:
            a, b = np.triu_indices(size, k=1)
            keep = rng.random(a.size) < min(1.0, degree / (size - 1))
            rows.append(a[keep] + start)
            cols.append(b[keep] + start)
        start += size
    a, b = np.concatenate(rows), np.concatenate(cols)
    w = rng.uniform(0.05, 1.0, a.size)
    upper = sp.coo_array((w, (a, b)), shape=(n, n))
    return sp.csr_array(upper + upper.T)


def make_problem(n: int, labels: int, labelled: float, seed: int) -> Problem:
    """The benchmark graph; a ``labelled`` fraction of the nodes carries a peaked prior over ``labels``."""
    rng = np.random.default_rng(seed)
    W = block_graph(n, degree=22.0, rng=rng)
    clamped = rng.random(n) < labelled
    Y = np.zeros((n, labels))
    Y[clamped] = rng.dirichlet(np.full(labels, 0.2), int(clamped.sum()))
    return Problem(W, Y, clamped)


# --- peers -------------------------------------------------------------------------------


def _degrees(W: sp.csr_array) -> np.ndarray:
    return np.asarray(W.sum(axis=1)).ravel()


def _safe_inverse(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    out[x > 0] = 1.0 / x[x > 0]
    return out


def _fixed_rows(problem: Problem) -> np.ndarray:
    """Clamped nodes and the nodes of components without a clamped node."""
    _, component = connected_components(problem.W, directed=False)
    seeded = np.zeros(component.max() + 1, dtype=bool)
    seeded[component[problem.clamped]] = True
    return problem.clamped | ~seeded[component]


def spreading_fixed_point(
    problem: Problem, alpha: float, tol: float, max_iter: int = 100_000
) -> tuple[np.ndarray, int]:
    """``F <- alpha S F + (1 - alpha) Y`` until every column's update is <= tol * ||(1 - alpha) Y||."""
    W = problem.W
    scale = np.sqrt(_safe_inverse(_degrees(W)))
    S = sp.diags_array(scale) @ W @ sp.diags_array(scale)
    B = (1.0 - alpha) * problem.Y
    b_norm = np.linalg.norm(B, axis=0)
    F = B.copy()
    for iteration in range(1, max_iter + 1):
        F_new = alpha * (S @ F) + B
        change = np.linalg.norm(F_new - F, axis=0)
        F = F_new
        if np.all(change <= tol * b_norm):
            return F, iteration
    return F, max_iter


def propagation_fixed_point(problem: Problem, tol: float, max_iter: int = 100_000) -> tuple[np.ndarray, int]:
    """``F <- D^{-1} W F`` with fixed rows reset to Y, until the free rows' residual is <= tol * ||W_ul Y_l||."""
    W, Y = problem.W, problem.Y
    d = _degrees(W)
    P = sp.diags_array(_safe_inverse(d)) @ W
    fixed = _fixed_rows(problem)
    free = ~fixed
    b_norm = np.linalg.norm((W @ np.where(problem.clamped[:, None], Y, 0.0))[free], axis=0)
    F = np.where(fixed[:, None], Y, 0.0)
    for iteration in range(1, max_iter + 1):
        F_new = P @ F
        F_new[fixed] = Y[fixed]
        residual = np.linalg.norm(d[free, None] * (F_new[free] - F[free]), axis=0)
        F = F_new
        if np.all(residual <= tol * b_norm):
            return F, iteration
    return F, max_iter


def _scipy_cg_columns(matvec: Callable[[np.ndarray], np.ndarray], B: np.ndarray, tol: float,
                      x0: np.ndarray | None = None, inv_diag: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """``scipy.sparse.linalg.cg`` once per column; returns the solution and the summed iterations."""
    n = B.shape[0]
    A = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    M = None if inv_diag is None else LinearOperator((n, n), matvec=lambda r: inv_diag * r, dtype=np.float64)
    X = np.zeros_like(B)
    count = [0]

    def tick(_: np.ndarray) -> None:
        count[0] += 1

    for k in range(B.shape[1]):
        if not B[:, k].any():
            continue
        start = None if x0 is None else x0[:, k]
        X[:, k], info = cg(A, B[:, k], x0=start, rtol=tol, atol=0.0, maxiter=10_000, M=M, callback=tick)
        if info:
            print(f"  scipy cg: column {k} did not converge ({info})")
    return X, count[0]


def spreading_scipy_cg(problem: Problem, alpha: float, tol: float) -> tuple[np.ndarray, int]:
    """Spreading with scipy's CG per column, started at (1 - alpha) Y like the block solver."""
    W = problem.W
    scale = np.sqrt(_safe_inverse(_degrees(W)))
    S = sp.csr_array(sp.diags_array(scale) @ W @ sp.diags_array(scale))
    B = (1.0 - alpha) * problem.Y
    return _scipy_cg_columns(lambda x: x - alpha * (S @ x), B, tol, x0=B)


def propagation_scipy_cg(problem: Problem, tol: float) -> tuple[np.ndarray, int]:
    """Harmonic solution with scipy's Jacobi-preconditioned CG per column on the free block."""
    W, Y = problem.W, problem.Y
    free = ~_fixed_rows(problem)
    rows = W[free]
    d = _degrees(rows)
    W_uu = rows[:, free]
    B = rows @ np.where(problem.clamped[:, None], Y, 0.0)
    X, iterations = _scipy_cg_columns(lambda x: d * x - W_uu @ x, B, tol, inv_diag=1.0 / d)
    F = Y.copy()
    F[free] = X
    return F, iterations


# --- driver ------------------------------------------------------------------------------


def timed(fn: Callable[[], tuple[np.ndarray, int] | np.ndarray], repeat: int) -> tuple[float, np.ndarray, int | None]:
    """Best wall time of ``repeat`` calls, the last result and its iteration count (if reported)."""
    best = np.inf
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    if isinstance(out, tuple):
        return best, out[0], out[1]
    return best, out, None


@contextlib.contextmanager
def cg_iterations() -> Iterator[list[int]]:
    """Record the iteration counts of ``propagation.block_cg`` calls made inside the block."""
    counts: list[int] = []
    original = propagation.block_cg

    def counting(*args: object, **kwargs: object) -> propagation.BlockCGResult:
        result = original(*args, **kwargs)
        counts.append(result.iterations)
        return result

    propagation.block_cg = counting
    try:
        yield counts
    finally:
        propagation.block_cg = original


def report(title: str, rows: list[tuple[str, float, int | None, np.ndarray]], reference: np.ndarray) -> None:
    """One table: method, seconds, iterations, max |F - F_cg|, max |F - F_ref|, time / block CG."""
    print(f"\n{title}")
    print(f"  {'method':<14} {'seconds':>9} {'iters':>7} {'max|F-F_cg|':>12} {'max|F-F_ref|':>13} {'x block CG':>11}")
    base, F_cg = rows[0][1], rows[0][3]
    for name, seconds, iterations, F in rows:
        its = "-" if iterations is None else str(iterations)
        diff = float(np.abs(F - F_cg).max())
        err = float(np.abs(F - reference).max())
        nan = "  NaN!" if np.isnan(F).any() else ""
        print(f"  {name:<14} {seconds:>9.3f} {its:>7} {diff:>12.2e} {err:>13.2e} {seconds / base:>10.1f}x{nan}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.99)
    parser.add_argument("--labelled", type=float, default=0.1, help="fraction of labelled (clamped) nodes")
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the CG solvers (peers run once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5,000 nodes, one repetition")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.repeat = 5_000, 1

    started = time.perf_counter()
    problem = make_problem(args.nodes, args.labels, args.labelled, args.seed)
    W = problem.W
    degree = np.diff(W.indptr)
    n_comp, _ = connected_components(W, directed=False)
    unreachable = int((_fixed_rows(problem) & ~problem.clamped).sum())
    print(f"graph: {W.shape[0]:,} nodes, {W.nnz // 2:,} edges, mean degree {degree.mean():.1f}, "
          f"{int((degree == 0).sum()):,} isolated, {n_comp:,} components "
          f"({time.perf_counter() - started:.2f} s to build)")
    print(f"prior: {args.labels} labels, {int(problem.clamped.sum()):,} labelled/clamped nodes, "
          f"{unreachable:,} unlabelled nodes without a clamped node in their component")
    print(f"alpha = {args.alpha}, tol = {args.tol:g} (relative residual per column)")

    a, tol = args.alpha, args.tol
    with cg_iterations() as counts:  # untimed: iteration count and a 1e-4 x tighter reference
        label_spreading(W, problem.Y, a, tol=tol)
        F_ref = label_spreading(W, problem.Y, a, tol=tol * 1e-4)
    t_cg, F_cg, _ = timed(lambda: label_spreading(W, problem.Y, a, tol=tol), args.repeat)
    t_sc, F_sc, it_sc = timed(lambda: spreading_scipy_cg(problem, a, tol), args.repeat)
    t_fp, F_fp, it_fp = timed(lambda: spreading_fixed_point(problem, a, tol), 1)
    report("label_spreading", [("block CG", t_cg, counts[0], F_cg), ("scipy cg/col", t_sc, it_sc, F_sc),
                               ("fixed point", t_fp, it_fp, F_fp)], F_ref)

    with cg_iterations() as counts:
        label_propagation(W, problem.Y, problem.clamped, tol=tol)
        F_ref = label_propagation(W, problem.Y, problem.clamped, tol=tol * 1e-4)
    t_cg, F_cg, _ = timed(lambda: label_propagation(W, problem.Y, problem.clamped, tol=tol), args.repeat)
    t_sc, F_sc, it_sc = timed(lambda: propagation_scipy_cg(problem, tol), args.repeat)
    t_fp, F_fp, it_fp = timed(lambda: propagation_fixed_point(problem, tol), 1)
    report("label_propagation", [("block CG", t_cg, counts[0], F_cg), ("scipy cg/col", t_sc, it_sc, F_sc),
                                 ("fixed point", t_fp, it_fp, F_fp)], F_ref)
    print("\nF_cg: block CG at tol; F_ref: block CG at tol * 1e-4. Iterations: block CG and fixed point do one")
    print("full-width sparse product each; scipy cg/col counts are summed over the columns (one matvec each).")


if __name__ == "__main__":
    main()
