"""Graph label propagation: label spreading and the harmonic (clamped) solution, solved by CG.

Both methods take a sparse, symmetric, non-negative adjacency ``W`` (n x n; zero
diagonal expected, isolated nodes allowed) and a dense prior ``Y`` (n x c; rows are
label distributions or zero rows) and return a dense ``F`` (n x c, float64).
``D = diag(d)`` with ``d_i = sum_j W_ij`` is the degree matrix. Inputs are
validated (square, finite, non-negative, symmetric ``W``; ``Y`` with n rows and
no NaN/inf) and rejected with ``ValueError``; stored zeros in ``W`` are not
edges; self-loops, if any, count like other edges.

Label spreading (Zhou et al., 2004)
    With the symmetrically normalised affinity ``S = D^{-1/2} W D^{-1/2}`` the
    spreading iteration ``F <- alpha S F + (1 - alpha) Y`` converges to the
    fixed point

        F* = (1 - alpha) (I - alpha S)^{-1} Y,

    i.e. the solution of ``(I - alpha S) F = (1 - alpha) Y``. Each node trades
    off agreement with its neighbours (weight ``alpha``) against its own prior
    (weight ``1 - alpha``). For a node of degree 0 ``D^{-1/2}`` is *defined* as
    0: its row and column of ``S`` are zero, so ``F_i = (1 - alpha) Y_i`` (no
    division by zero, no NaN).

Label propagation (Zhu & Ghahramani, 2002; Zhu et al., 2003)
    Labelled ("clamped") nodes ``l`` keep ``F_l = Y_l``; the unlabelled nodes
    ``u`` take the harmonic solution (every unlabelled node is the weighted
    average of its neighbours), i.e. the minimiser of ``sum_ij W_ij |F_i - F_j|^2``
    with the clamped rows fixed:

        (D_uu - W_uu) F_u = W_ul Y_l.

    In a connected component without any clamped node (an isolated node, for
    instance) this system is singular: every constant is harmonic there. Such
    nodes are detected with ``scipy.sparse.csgraph.connected_components`` and
    get **their own prior row**, ``F_i = Y_i``; only the rest is solved.

Why conjugate gradients converge
    Both systems are symmetric positive definite (SPD), so CG converges, with
    the A-norm of the error shrinking at least like
    ``2 ((sqrt(k) - 1) / (sqrt(k) + 1))^t`` after ``t`` steps, ``k`` the condition
    number.

    * Spreading: ``S`` is similar to the row-stochastic ``D^{-1} W`` (restricted
      to the nodes of non-zero degree), so its eigenvalues lie in ``[-1, 1]`` and
      those of ``I - alpha S`` in ``[1 - alpha, 1 + alpha]``. For ``0 <= alpha < 1``
      the matrix is SPD with ``k <= (1 + alpha) / (1 - alpha)`` (199 at
      ``alpha = 0.99``: at most about 140 CG steps to 1e-8, against about 1,800
      for the fixed-point iteration, whose error only shrinks like ``alpha^t``).
      On graphs of dense blocks the spectrum is clustered (the eigenvalue
      ``1 - alpha`` once per component, the rest within about
      ``1 +- 2 alpha / sqrt(degree)``) and CG needs far fewer.
    * Propagation: ``L_uu = D_uu - W_uu`` is a principal block of the graph
      Laplacian, hence symmetric positive semi-definite, with a non-negative
      diagonal. It is block diagonal over the connected pieces of the
      unlabelled subgraph; each piece we solve lies in a component with a
      clamped node, so it has an edge to one, which makes its block irreducibly
      diagonally dominant (strictly so on the rows next to a clamped node),
      hence non-singular, hence SPD. Its conditioning depends
      on the graph, not on a parameter, so the solver uses the Jacobi
      preconditioner ``D_uu^{-1}``: the preconditioned operator is similar to
      ``I - D_uu^{-1/2} W_uu D_uu^{-1/2}``, whose eigenvalues lie in ``(0, 2)``.

The solver, :func:`block_cg`, runs the ``c`` right-hand sides as independent CG
recurrences that share one sparse matrix-matrix product per iteration (step
sizes, residual norms and convergence tests are per column); columns are
dropped from the block as they converge. One CSR product with many columns
costs less than as many single products, so this beats ``scipy.sparse.linalg.cg``
run column by column (it is no faster for a single column) and, by far, the
fixed-point iterations (``benchmarks/propagation_speed.py`` measures both).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = [
    "BlockCGResult",
    "PropagationConvergenceWarning",
    "block_cg",
    "degrees",
    "label_propagation",
    "label_spreading",
    "normalize_rows",
    "normalized_adjacency",
    "reachable_from",
]

_SYMMETRY_RTOL = 1e-8  # relative tolerance of the symmetry probe


class PropagationConvergenceWarning(RuntimeWarning):
    """CG stopped at ``max_iter`` (or broke down) before every column reached ``tol``."""


class BlockCGResult(NamedTuple):
    """Solution ``x`` (n x c), iterations run, final relative residual per column, convergence flags."""

    x: np.ndarray
    iterations: int
    residuals: np.ndarray
    converged: np.ndarray


# --- validation ----------------------------------------------------------------------------


def _as_csr(W: sp.spmatrix | sp.sparray | np.ndarray) -> sp.csr_array:
    """``W`` as a float64 CSR array, checked square, finite, non-negative and symmetric."""
    if not (sp.issparse(W) or isinstance(W, np.ndarray)):
        raise ValueError(f"W must be a scipy sparse matrix or a numpy array, got {type(W).__name__}")
    if len(W.shape) != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square n x n matrix, got shape {W.shape}")
    W = sp.csr_array(W, dtype=np.float64)
    if W.nnz:
        if not np.all(np.isfinite(W.data)):
            raise ValueError("W contains NaN or infinite weights")
        if W.data.min() < 0:
            raise ValueError(f"W must be non-negative, found weight {W.data.min():g}")
    _check_symmetric(W)
    return W


def _check_symmetric(W: sp.csr_array, rtol: float = _SYMMETRY_RTOL) -> None:
    """Raise unless ``W ~= W^T``, probed with one random vector in O(nnz).

    For a random ``v`` (fixed seed), ``(W - W^T) v`` is zero with probability 1
    only if ``W = W^T``. Row ``i`` passes when ``|(W v)_i - (W^T v)_i|`` is at most
    ``rtol * ((W |v|)_i + (W^T |v|)_i)``, so rounding-level asymmetry is tolerated.
    No transposed copy of ``W`` is built.
    """
    n = W.shape[0]
    if W.nnz == 0:
        return
    v = np.random.default_rng(0x5EED).standard_normal(n)
    WT = W.T  # CSC view, no copy
    gap = np.abs(W @ v - WT @ v)
    scale = W @ np.abs(v) + WT @ np.abs(v)
    bad = gap > rtol * scale
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"W must be symmetric (W != W.T, first mismatch in row {row})")


def _as_prior(Y: object, n: int) -> np.ndarray:
    """``Y`` as a float64 (n x c) array without NaN/inf (a copy: callers may write to it)."""
    Y = np.array(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise ValueError(f"Y must be a 2-D (n x c) array, got {Y.ndim} dimension(s)")
    if Y.shape[0] != n:
        raise ValueError(f"Y has {Y.shape[0]} rows but W has {n} nodes")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y contains NaN or infinite values")
    return Y


def _as_mask(clamped: object, n: int) -> np.ndarray:
    """``clamped`` as a boolean vector of length n."""
    mask = np.asarray(clamped)
    if mask.dtype != np.bool_:
        raise ValueError(f"clamped must be a boolean mask, got dtype {mask.dtype}")
    if mask.shape != (n,):
        raise ValueError(f"clamped must have shape ({n},), got {mask.shape}")
    return mask


def _check_solver(tol: float, max_iter: int) -> None:
    """``tol`` > 0 and ``max_iter`` >= 1."""
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")


# --- graph helpers -------------------------------------------------------------------------


def degrees(W: sp.csr_array) -> np.ndarray:
    """Row sums ``d_i = sum_j W_ij`` (float64, length n)."""
    return np.asarray(W.sum(axis=1), dtype=np.float64).ravel()


def _inv_sqrt(d: np.ndarray) -> np.ndarray:
    """``d^{-1/2}`` elementwise, defined as 0 where ``d == 0``."""
    out = np.zeros_like(d)
    positive = d > 0
    out[positive] = 1.0 / np.sqrt(d[positive])
    return out


def normalized_adjacency(W: sp.csr_array, d: np.ndarray | None = None) -> sp.csr_array:
    """``S = D^{-1/2} W D^{-1/2}`` with ``D^{-1/2}_ii = 0`` on zero-degree rows.

    Entry-wise ``S_ij = W_ij / sqrt(d_i d_j)``, computed on the stored entries of
    ``W`` (same sparsity pattern, no NaN/inf).
    """
    scale = _inv_sqrt(degrees(W) if d is None else d)
    data = W.data * scale[W.indices]
    data *= np.repeat(scale, np.diff(W.indptr))  # row i's entries times d_i^{-1/2}
    return sp.csr_array((data, W.indices, W.indptr), shape=W.shape)


def normalize_rows(F: np.ndarray) -> np.ndarray:
    """Rows divided by their sums, ``F_ij / sum_k F_ik``; rows summing to 0 (all-zero rows) stay 0."""
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2:
        raise ValueError(f"F must be a 2-D array, got {F.ndim} dimension(s)")
    sums = F.sum(axis=1)
    out = np.zeros_like(F)
    nonzero = sums != 0
    out[nonzero] = F[nonzero] / sums[nonzero, None]
    return out


# --- block conjugate gradients -------------------------------------------------------------


# The CG state is kept as C-contiguous (n x c) blocks, the layout scipy's CSR
# mat-mat product reads and writes. Column-wise numpy operations on such blocks
# broadcast along an inner axis of only c elements, which is several times slower
# than a flat loop; the helpers below view the first rows as lines of
# ``_LINE_ROWS * c`` contiguous elements (plus a short remainder) instead.
_LINE_ROWS = 256


def _split(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A C-contiguous (n x c) block as (lines of ``_LINE_ROWS`` rows flattened, remaining rows)."""
    if not A.flags.c_contiguous:  # a reshape would copy, and writes to ``out`` would be lost
        raise ValueError("internal error: CG blocks must be C-contiguous")
    n, c = A.shape
    q = n - n % _LINE_ROWS
    return A[:q].reshape(q // _LINE_ROWS, _LINE_ROWS * c), A[q:]


def _column_dot(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``<A[:, k], B[:, k]>`` for every column k of two C-contiguous blocks."""
    (A_lines, A_rest), (B_lines, B_rest) = _split(A), _split(B)
    partial = np.einsum("ij,ij->j", A_lines, B_lines).reshape(_LINE_ROWS, A.shape[1]).sum(axis=0)
    return partial + np.einsum("ij,ij->j", A_rest, B_rest)


def _scale_columns(A: np.ndarray, s: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:, k] = s[k] * A[:, k]`` for C-contiguous blocks; returns ``out``."""
    (A_lines, A_rest), (out_lines, out_rest) = _split(A), _split(out)
    np.multiply(A_lines, np.tile(s, _LINE_ROWS), out=out_lines)
    np.multiply(A_rest, s, out=out_rest)
    return out


def _scale_rows(A: np.ndarray, repeated: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[i, k] = v[i] * A[i, k]`` given ``repeated = np.repeat(v, c)``; returns ``out``."""
    np.multiply(A.reshape(-1), repeated, out=out.reshape(-1))
    return out


def _columns(A: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``A[:, index]`` (``index``: positions or a mask) as a C-contiguous copy.

    ``np.take`` along axis 1 writes C order directly, about 20 times faster than fancy indexing (which
    returns F order) followed by ``np.ascontiguousarray``: block CG repacks its blocks each time a column
    converges, and that copy was a third of a solve."""
    positions = np.flatnonzero(index) if index.dtype == bool else index
    return np.take(A, positions, axis=1)


def block_cg(
    matmat: Callable[[np.ndarray], np.ndarray],
    B: np.ndarray,
    *,
    x0: np.ndarray | None = None,
    inv_diag: np.ndarray | None = None,
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> BlockCGResult:
    """Solve ``A X = B`` column by column with (Jacobi-preconditioned) CG, one ``A @ P`` per step.

    ``matmat(P)`` must return ``A @ P`` for an SPD ``A`` and any (n x k) block ``P``.
    Column ``k`` runs the textbook recurrence with ``M = diag(inv_diag)^{-1}``
    (identity when ``inv_diag`` is None)::

        z = M^{-1} r,  a = <r, z> / <p, A p>,  x += a p,  r -= a A p,
        b = <r', z'> / <r, z>,  p = z' + b p

    and stops once its relative residual ``||r_k|| / ||B_k||`` is at most ``tol``
    (a zero column of ``B`` gives ``x_k = 0``). The recursively updated residual is
    used, as in ``scipy.sparse.linalg.cg``. Converged columns leave the block, so
    later products get narrower. Warns :class:`PropagationConvergenceWarning` if
    some column has not converged after ``max_iter`` iterations.
    """
    _check_solver(tol, max_iter)
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2:
        raise ValueError(f"B must be a 2-D (n x c) array, got {B.ndim} dimension(s)")
    n, c = B.shape
    X_out = np.zeros((n, c)) if x0 is None else np.array(x0, dtype=np.float64)
    if X_out.shape != B.shape:
        raise ValueError(f"x0 has shape {X_out.shape}, expected {B.shape}")
    if inv_diag is not None:
        inv_diag = np.asarray(inv_diag, dtype=np.float64)
        if inv_diag.shape != (n,):
            raise ValueError(f"inv_diag has shape {inv_diag.shape}, expected ({n},)")
    b_norm = np.linalg.norm(B, axis=0)
    residuals = np.zeros(c)
    converged = b_norm == 0
    X_out[:, converged] = 0.0

    cols = np.flatnonzero(~converged)
    X = _columns(X_out, cols)
    R = _columns(B, cols)
    if x0 is not None:
        R -= matmat(X)
    T = np.empty_like(R)  # scratch for the step products
    inv_rep = None if inv_diag is None else np.repeat(inv_diag, cols.size)
    Z = R if inv_rep is None else _scale_rows(R, inv_rep, np.empty_like(R))
    P = Z.copy()
    rz = _column_dot(R, Z)
    stalled = np.zeros(cols.size, dtype=bool)
    iterations = 0
    while cols.size:
        rr = rz if inv_rep is None else _column_dot(R, R)
        r_rel = np.sqrt(rr) / b_norm[cols]
        done = (r_rel <= tol) | stalled | (iterations >= max_iter)
        if np.any(done):
            X_out[:, cols[done]] = X[:, done]
            residuals[cols[done]] = r_rel[done]
            converged[cols[done]] = r_rel[done] <= tol
            keep = ~done
            cols, X, R, P, T, Z = (cols[keep], *(_columns(A, keep) for A in (X, R, P, T, Z)))
            rz, stalled = rz[keep], stalled[keep]
            if inv_rep is None:
                Z = R
            elif cols.size:
                assert inv_diag is not None  # inv_rep is set only from it
                inv_rep = np.repeat(inv_diag, cols.size)
            if not cols.size:
                break
        AP = np.ascontiguousarray(matmat(P), dtype=np.float64)
        pAp = _column_dot(P, AP)
        stalled = pAp <= 0  # breakdown: A not SPD on this column (or rounding once r ~ 0)
        step = np.where(stalled, 0.0, rz / np.where(stalled, 1.0, pAp))
        X += _scale_columns(P, step, T)
        R -= _scale_columns(AP, step, T)
        if inv_rep is not None:
            _scale_rows(R, inv_rep, Z)
        rz_new = _column_dot(R, Z)
        _scale_columns(P, rz_new / rz, P)
        P += Z
        rz = rz_new
        iterations += 1

    if not np.all(converged):
        bad = np.flatnonzero(~converged)
        warnings.warn(
            f"block CG did not reach tol={tol:g} in {iterations} iterations for column(s) "
            f"{bad.tolist()} (worst relative residual {residuals[bad].max():.3g})",
            PropagationConvergenceWarning,
            stacklevel=3,
        )
    return BlockCGResult(X_out, iterations, residuals, converged)


# --- label spreading -----------------------------------------------------------------------


def label_spreading(
    W: sp.spmatrix | sp.sparray | np.ndarray,
    Y: np.ndarray,
    alpha: float,
    *,
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> np.ndarray:
    """Label spreading: solve ``(I - alpha S) F = (1 - alpha) Y``, ``S = D^{-1/2} W D^{-1/2}``.

    ``F = (1 - alpha) sum_t (alpha S)^t Y`` mixes each node's prior with priors
    diffused over the graph; ``alpha`` in ``[0, 1)`` is the weight of the
    neighbours. Zero-degree nodes get ``F_i = (1 - alpha) Y_i`` exactly.
    Solved by block CG started at ``(1 - alpha) Y`` to relative residual ``tol``
    per column. Returns F (n x c, float64), not row-normalised (see
    :func:`normalize_rows`).
    """
    # bool(): numpy types isscalar as a TypeGuard, which would retype alpha as any scalar kind (str, bytes, ...)
    if not (bool(np.isscalar(alpha)) and np.isfinite(alpha) and 0.0 <= alpha < 1.0):
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    _check_solver(tol, max_iter)
    W = _as_csr(W)
    Y = _as_prior(Y, W.shape[0])
    S = normalized_adjacency(W)
    B = (1.0 - alpha) * Y

    def matmat(P: np.ndarray) -> np.ndarray:  # (I - alpha S) P, in place on the product
        out = S @ P
        out *= -alpha
        out += P
        return out

    # x0 = B: the residual alpha S B is exactly 0 on zero-degree rows, so they stay at B.
    return block_cg(matmat, B, x0=B, tol=tol, max_iter=max_iter).x


# --- label propagation ---------------------------------------------------------------------


def reachable_from(W: sp.csr_array, seeds: np.ndarray) -> np.ndarray:
    """Boolean mask of the nodes whose connected component contains a ``seeds`` node.

    Components are those of the positive weights: csgraph counts stored zeros as
    edges, so they are pruned first (on a copy, only when there are any).
    """
    if W.nnz and not np.all(W.data):
        W = W.copy()
        W.eliminate_zeros()
    _, component = connected_components(W, directed=False)
    has_seed = np.zeros(component.max() + 1 if component.size else 0, dtype=bool)
    has_seed[component[seeds]] = True
    return has_seed[component]


def label_propagation(
    W: sp.spmatrix | sp.sparray | np.ndarray,
    Y: np.ndarray,
    clamped: np.ndarray,
    *,
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> np.ndarray:
    """Harmonic label propagation with hard clamping: ``F_l = Y_l``, ``(D_uu - W_uu) F_u = W_ul Y_l``.

    Every unlabelled node ends up at the weighted mean of its neighbours,
    ``F_i = sum_j W_ij F_j / d_i``, with the ``clamped`` rows held at ``Y``.
    Unlabelled nodes whose connected component holds no clamped node (isolated
    nodes included) have no harmonic solution that the labels determine; they
    keep their own prior row, ``F_i = Y_i``. The rest is solved by Jacobi-
    preconditioned block CG to relative residual ``tol`` per column.
    Returns F (n x c, float64).
    """
    _check_solver(tol, max_iter)
    W = _as_csr(W)
    n = W.shape[0]
    Y = _as_prior(Y, n)
    clamped = _as_mask(clamped, n)
    F = Y  # already a private copy
    free = ~clamped & reachable_from(W, clamped)
    if not np.any(free):
        return F

    rows = W[free]  # CSR row slice: edges out of the free nodes
    d_free = degrees(rows)
    L_uu = sp.csr_array(sp.diags_array(d_free, format="csr") - rows[:, free])  # D_uu - W_uu
    B = rows @ np.where(clamped[:, None], Y, 0.0)  # W_ul Y_l

    F[free] = block_cg(L_uu.__matmul__, B, inv_diag=1.0 / d_free, tol=tol, max_iter=max_iter).x
    return F
