"""Label spreading / harmonic propagation against dense closed forms on small random graphs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from choral.kernels.propagation import (
    PropagationConvergenceWarning,
    _column_dot,
    _scale_columns,
    block_cg,
    label_propagation,
    label_spreading,
    normalize_rows,
)

# --- fixtures ------------------------------------------------------------------------------


def random_graph(seed: int, n: int = 90) -> sp.csr_array:
    """Symmetric sparse graph: three dense-ish blocks, a sparse tail, isolated nodes, a zero row.

    Nodes 0-9 are isolated (degree 0); node 10 stores an explicit zero weight (a
    zero-degree row with a stored entry); the rest falls into several components.
    """
    rng = np.random.default_rng(seed)
    dense = np.zeros((n, n))
    for start, stop, p in [(11, 35, 0.4), (35, 60, 0.3), (60, 72, 0.5), (72, n, 0.08)]:
        block = rng.random((stop - start, stop - start)) < p
        dense[start:stop, start:stop] = np.where(block, rng.uniform(0.1, 2.0, block.shape), 0.0)
    dense = np.triu(dense, k=1)
    dense = dense + dense.T
    W = sp.csr_array(dense)
    W = sp.csr_array((np.append(W.data, [0.0, 0.0]),
                      (np.append(W.nonzero()[0], [10, 20]), np.append(W.nonzero()[1], [20, 10]))), shape=(n, n))
    assert W.nnz == np.count_nonzero(dense) + 2  # explicit zeros kept
    return W


def random_prior(seed: int, n: int, c: int = 4) -> np.ndarray:
    """Random label distributions with about a third of the rows zero."""
    rng = np.random.default_rng(seed + 1000)
    Y = rng.dirichlet(np.ones(c), n)
    Y[rng.random(n) < 0.35] = 0.0
    return Y


def dense_spreading(W: sp.csr_array, Y: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) (I - alpha S)^{-1} Y`` with ``D^{-1/2} = 0`` on zero-degree rows."""
    A = W.toarray()
    d = A.sum(axis=1)
    inv_sqrt = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    S = inv_sqrt[:, None] * A * inv_sqrt[None, :]
    return (1.0 - alpha) * np.linalg.solve(np.eye(len(d)) - alpha * S, Y)


def dense_reachable(W: sp.csr_array, seeds: np.ndarray) -> np.ndarray:
    """Nodes connected to a seed, by boolean transitive closure (independent of csgraph)."""
    n = W.shape[0]
    reach = (W.toarray() > 0) | np.eye(n, dtype=bool)
    for _ in range(int(np.ceil(np.log2(n))) + 1):
        reach = (reach.astype(np.float64) @ reach.astype(np.float64)) > 0
    return reach[:, seeds].any(axis=1)


def dense_harmonic(W: sp.csr_array, Y: np.ndarray, clamped: np.ndarray) -> np.ndarray:
    """Clamped rows = Y, reachable unlabelled rows solve ``(D_uu - W_uu) F_u = W_ul Y_l``, others = Y."""
    A = W.toarray()
    d = A.sum(axis=1)
    u = ~clamped & dense_reachable(W, clamped)
    F = Y.copy()
    L_uu = np.diag(d[u]) - A[np.ix_(u, u)]
    F[u] = np.linalg.solve(L_uu, A[np.ix_(u, clamped)] @ Y[clamped])
    return F


# --- label spreading -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9, 0.99])
def test_spreading_matches_dense_closed_form(seed: int, alpha: float) -> None:
    W = random_graph(seed)
    Y = random_prior(seed, W.shape[0])
    F = label_spreading(W, Y, alpha)
    assert F.dtype == np.float64 and F.shape == Y.shape
    assert np.all(np.isfinite(F))
    np.testing.assert_allclose(F, dense_spreading(W, Y, alpha), rtol=0, atol=1e-6)


def test_spreading_zero_degree_rows_keep_scaled_prior() -> None:
    W = random_graph(3)
    Y = random_prior(3, W.shape[0])
    Y[:11] = np.random.default_rng(0).dirichlet(np.ones(4), 11)  # nodes 0-10 have degree 0
    F = label_spreading(W, Y, 0.8)
    np.testing.assert_array_equal(F[:11], (1 - 0.8) * Y[:11])


def test_spreading_alpha_zero_is_identity() -> None:
    W = random_graph(4)
    Y = random_prior(4, W.shape[0])
    np.testing.assert_array_equal(label_spreading(W, Y, 0.0), Y)


def test_spreading_two_nodes_by_hand() -> None:
    # S = [[0, 1], [1, 0]], (I - aS)^{-1} = [[1, a], [a, 1]] / (1 - a^2): F = [1, a] / (1 + a).
    W = sp.csr_array(np.array([[0.0, 3.0], [3.0, 0.0]]))
    F = label_spreading(W, np.array([[1.0], [0.0]]), 0.5)
    np.testing.assert_allclose(F.ravel(), [2 / 3, 1 / 3], atol=1e-12)


def test_spreading_chain_decays_from_labelled_end() -> None:
    n = 6
    W = sp.diags_array([np.ones(n - 1), np.ones(n - 1)], offsets=[-1, 1], format="csr")
    Y = np.zeros((n, 2))
    Y[0] = [1.0, 0.0]
    F = label_spreading(W, Y, 0.9)
    assert np.all(np.diff(F[:, 0]) < 0) and np.all(F[:, 0] > 0)
    np.testing.assert_array_equal(F[:, 1], 0.0)
    np.testing.assert_allclose(normalize_rows(F), np.tile([1.0, 0.0], (n, 1)))


def test_spreading_all_isolated_and_empty_graph() -> None:
    Y = random_prior(5, 7)
    for W in (sp.csr_array((7, 7)), sp.csr_array((np.zeros(2), ([0, 1], [1, 0])), shape=(7, 7))):
        np.testing.assert_array_equal(label_spreading(W, Y, 0.7), (1 - 0.7) * Y)


def test_spreading_accepts_matrix_dense_and_int_inputs() -> None:
    W = random_graph(6)
    Y = (random_prior(6, W.shape[0]) > 0.3).astype(np.int64)
    reference = label_spreading(W, Y.astype(float), 0.6)
    before = W.copy()
    for variant in (sp.csr_matrix(W), W.tocoo(), W.toarray()):
        np.testing.assert_allclose(label_spreading(variant, Y, 0.6), reference, atol=1e-12)
    assert (W != before).nnz == 0  # input untouched


def test_degenerate_shapes_and_float32_duplicates() -> None:
    # float32 csr_matrix with duplicate (summed) entries, as CutGraph.adjacency builds it
    W = sp.csr_matrix((np.ones(4, dtype=np.float32), ([0, 1, 0, 1], [1, 0, 1, 0])), shape=(3, 3))
    F = label_spreading(W, np.eye(3, 2), 0.5)
    assert F.dtype == np.float64
    np.testing.assert_allclose(F, [[2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 0]], atol=1e-12)
    assert label_spreading(W, np.zeros((3, 0)), 0.5).shape == (3, 0)
    assert label_propagation(W, np.zeros((3, 0)), np.array([True, False, False])).shape == (3, 0)
    empty = sp.csr_array((0, 0))
    assert label_spreading(empty, np.zeros((0, 2)), 0.5).shape == (0, 2)
    assert label_propagation(empty, np.zeros((0, 2)), np.zeros(0, dtype=bool)).shape == (0, 2)


# --- label propagation ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.6])
def test_propagation_matches_dense_harmonic(seed: int, fraction: float) -> None:
    W = random_graph(seed)
    n = W.shape[0]
    Y = random_prior(seed, n)
    clamped = np.random.default_rng(seed + 7).random(n) < fraction
    clamped[60:72] = False  # a whole component without a clamped node
    clamped[1:11] = False  # isolated (10: only a stored zero to node 20) and unlabelled
    clamped[0] = True  # an isolated clamped node
    F = label_propagation(W, Y, clamped)
    assert F.dtype == np.float64 and np.all(np.isfinite(F))
    np.testing.assert_allclose(F, dense_harmonic(W, Y, clamped), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(F[clamped], Y[clamped])
    unreachable = ~clamped & ~dense_reachable(W, clamped)
    assert unreachable[1:11].all() and unreachable[60:72].all()
    np.testing.assert_array_equal(F[unreachable], Y[unreachable])


def test_propagation_harmonic_rows_are_neighbour_means() -> None:
    W = random_graph(8)
    n = W.shape[0]
    Y = random_prior(8, n)
    clamped = np.random.default_rng(1).random(n) < 0.3
    F = label_propagation(W, Y, clamped, tol=1e-12)
    d = W.sum(axis=1)
    free = ~clamped & (d > 0) & dense_reachable(W, clamped)
    np.testing.assert_allclose(F[free], (W @ F)[free] / d[free, None], atol=1e-9)


def test_propagation_chain_by_hand() -> None:
    # Path 0-1-2-3, unit weights: the harmonic solution interpolates linearly between the ends.
    W = sp.diags_array([np.ones(3), np.ones(3)], offsets=[-1, 1], format="csr")
    Y = np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    F = label_propagation(W, Y, np.array([True, False, False, True]))
    np.testing.assert_allclose(F, [[1, 0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1]], atol=1e-12)
    # Only one end labelled: the whole chain takes its label.
    F = label_propagation(W, Y, np.array([True, False, False, False]))
    np.testing.assert_allclose(F, np.tile([1.0, 0.0], (4, 1)), atol=1e-12)


def test_propagation_without_clamped_nodes_returns_prior() -> None:
    W = random_graph(9)
    Y = random_prior(9, W.shape[0])
    np.testing.assert_array_equal(label_propagation(W, Y, np.zeros(W.shape[0], dtype=bool)), Y)
    np.testing.assert_array_equal(label_propagation(W, Y, np.ones(W.shape[0], dtype=bool)), Y)


# --- helpers -------------------------------------------------------------------------------


def test_normalize_rows() -> None:
    F = np.array([[1.0, 3.0], [0.0, 0.0], [0.0, 2.0]])
    out = normalize_rows(F)
    np.testing.assert_allclose(out, [[0.25, 0.75], [0.0, 0.0], [0.0, 1.0]])
    assert not np.isnan(out).any()
    F = label_spreading(random_graph(1), random_prior(1, 90), 0.9)
    sums = normalize_rows(F).sum(axis=1)
    np.testing.assert_allclose(sums[F.sum(axis=1) > 0], 1.0)
    np.testing.assert_array_equal(sums[F.sum(axis=1) == 0], 0.0)


def test_block_cg_matches_scipy_cg_per_column() -> None:
    rng = np.random.default_rng(3)
    M = rng.standard_normal((40, 40))
    A = M @ M.T + 40 * np.eye(40)
    B = rng.standard_normal((40, 5))
    B[:, 2] = 0.0
    result = block_cg(lambda P: A @ P, B, tol=1e-12)
    assert result.converged.all() and result.iterations <= 40
    np.testing.assert_array_equal(result.x[:, 2], 0.0)
    for k in range(5):
        x, info = cg(A, B[:, k], rtol=1e-12, atol=0.0)
        assert info == 0
        np.testing.assert_allclose(result.x[:, k], x, atol=1e-9)
    np.testing.assert_allclose(result.x, np.linalg.solve(A, B), atol=1e-9)


@pytest.mark.parametrize("n", [0, 7, 256, 700])
@pytest.mark.parametrize("c", [0, 1, 3])
def test_column_helpers_match_naive(n: int, c: int) -> None:
    rng = np.random.default_rng(n + c)
    A, B, s = rng.standard_normal((n, c)), rng.standard_normal((n, c)), rng.standard_normal(c)
    np.testing.assert_allclose(_column_dot(A, B), (A * B).sum(axis=0), atol=1e-10)
    out = np.empty_like(A)
    assert _scale_columns(A, s, out) is out
    np.testing.assert_array_equal(out, A * s)


def test_block_cg_large_block_with_columns_converging_at_different_steps() -> None:
    # n = 700 exercises the 256-row line views and the remainder; a right-hand side
    # that is an eigenvector converges in one step and leaves the block early.
    rng = np.random.default_rng(5)
    n = 700
    eigenvalues = np.linspace(1.0, 50.0, n)
    A = sp.diags_array(eigenvalues, format="csr")
    B = rng.standard_normal((n, 4))
    B[:, 1] = 0.0
    B[:, 1][3] = 2.0  # e_3, an eigenvector
    inv_diag = 1.0 / (eigenvalues + rng.uniform(0, 5, n))
    for preconditioner in (None, inv_diag):
        result = block_cg(A.__matmul__, B, inv_diag=preconditioner, tol=1e-12, max_iter=500)
        assert result.converged.all() and np.all(result.residuals <= 1e-12)
        np.testing.assert_allclose(result.x, B / eigenvalues[:, None], atol=1e-10)
    W = random_graph(11, n=80)
    big = sp.block_diag([W] * 9, format="csr")  # 720 nodes
    Y = random_prior(11, big.shape[0])
    np.testing.assert_allclose(label_spreading(big, Y, 0.95), dense_spreading(big, Y, 0.95), atol=1e-6)
    clamped = np.random.default_rng(2).random(big.shape[0]) < 0.2
    np.testing.assert_allclose(label_propagation(big, Y, clamped), dense_harmonic(big, Y, clamped), atol=1e-6)


def test_block_cg_warns_when_not_converged() -> None:
    W = random_graph(2)
    Y = random_prior(2, W.shape[0])
    with pytest.warns(PropagationConvergenceWarning):
        F = label_spreading(W, Y, 0.99, max_iter=1)
    assert np.all(np.isfinite(F))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        label_spreading(W, Y, 0.99)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_alpha_out_of_range(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        label_spreading(random_graph(0), random_prior(0, 90), alpha)


def test_validation_errors() -> None:
    W = random_graph(0)
    n = W.shape[0]
    Y = random_prior(0, n)
    mask = np.zeros(n, dtype=bool)
    W_inf = W.copy()
    W_inf.data[0] = np.inf
    cases = [
        (lambda: label_spreading(W[:, :-1], Y, 0.5), "square"),
        (lambda: label_spreading(W, Y[:-1], 0.5), "rows"),
        (lambda: label_spreading(W, Y[:, 0], 0.5), "2-D"),
        (lambda: label_propagation(W, Y[1:], mask), "rows"),
        (lambda: label_propagation(W, Y, mask[1:]), "shape"),
        (lambda: label_propagation(W, Y, mask.astype(int)), "boolean"),
        (lambda: label_spreading(-W, Y, 0.5), "non-negative"),
        (lambda: label_propagation(-W, Y, mask), "non-negative"),
        (lambda: label_spreading(sp.triu(W, format="csr"), Y, 0.5), "symmetric"),
        (lambda: label_propagation(sp.triu(W, format="csr"), Y, mask), "symmetric"),
        (lambda: label_spreading(W, np.where(np.eye(n, 4, dtype=bool), np.nan, Y), 0.5), "NaN"),
        (lambda: label_propagation(W, np.where(np.eye(n, 4, dtype=bool), np.nan, Y), mask), "NaN"),
        (lambda: label_spreading(W_inf, Y, 0.5), "NaN or infinite"),
        (lambda: label_spreading(W, Y, 0.5, tol=0.0), "tol"),
        (lambda: label_spreading(W, Y, 0.5, max_iter=0), "max_iter"),
        (lambda: label_spreading([[0, 1], [1, 0]], Y[:2], 0.5), "sparse"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_asymmetry_within_rounding_is_accepted() -> None:
    W = random_graph(1).toarray()
    W_noisy = W * (1 + 1e-13 * np.random.default_rng(0).standard_normal(W.shape))
    Y = random_prior(1, W.shape[0])
    np.testing.assert_allclose(label_spreading(sp.csr_array(W_noisy), Y, 0.5), label_spreading(W, Y, 0.5), atol=1e-9)
    W_bad = W.copy()
    i, j = np.argwhere(W > 0)[0]
    W_bad[i, j] *= 1.001
    with pytest.raises(ValueError, match="symmetric"):
        label_spreading(sp.csr_array(W_bad), Y, 0.5)


def test_block_cg_repacking_keeps_c_order_and_the_columns() -> None:
    """The repack (np.take) gives A[:, index] in C order from a mask or positions, whatever A's order."""
    from choral.kernels.propagation import _columns

    rng = np.random.default_rng(0)
    for A in (rng.random((300, 6)), np.asfortranarray(rng.random((300, 6)))):
        for index in (np.array([True, False, True, True, False, True]), np.array([0, 2, 5]), np.array([], int)):
            taken = _columns(A, index)
            assert taken.flags.c_contiguous and np.array_equal(taken, A[:, index])
