"""Tests for choral.kernels.dtw: both backends against a plain Python DTW."""

from __future__ import annotations

import math

import numpy as np
import pytest

from choral.kernels import dtw, dtw_numpy

RTOL = 1e-4  # the compiled kernel accumulates in float32


def reference_dtw(x: np.ndarray, y: np.ndarray, window: int | None = None) -> float:
    """Textbook DTW (symmetric1, squared local cost), a plain double loop."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, m = len(x), len(y)
    acc = [[math.inf] * (m + 1) for _ in range(n + 1)]
    acc[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if window is not None and abs(i - j) > window:
                continue
            diff = x[i - 1] - y[j - 1]
            cost = float(np.dot(diff, diff)) if diff.ndim else float(diff * diff)
            acc[i][j] = cost + min(acc[i - 1][j], acc[i][j - 1], acc[i - 1][j - 1])
    return math.sqrt(acc[n][m])


def reference_matrix(xs, ys, window=None) -> np.ndarray:
    return np.array([[reference_dtw(x, y, window) for y in ys] for x in xs])


def backends() -> list:
    params = [pytest.param("numpy", id="numpy")]
    skip = pytest.mark.skipif("c" not in dtw.available_backends(),
                              reason="compiled kernel choral.kernels._dtw_simd is not built")
    params.insert(0, pytest.param("c", id="c", marks=skip))
    return params


def assert_dtw_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == np.float64
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=RTOL, atol=1e-9)


@pytest.fixture(scope="module")
def ragged_series() -> list[np.ndarray]:
    """40 series of lengths 1..30: several lock-step blocks, lanes of unequal lengths."""
    rng = np.random.default_rng(7)
    lengths = np.r_[1, 2, 30, rng.integers(1, 31, size=37)]
    return [rng.standard_normal(n).astype(np.float32) for n in lengths]


@pytest.fixture(scope="module")
def ragged_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(8)
    lengths = np.r_[1, 18, rng.integers(1, 19, size=22)]
    return [rng.standard_normal((n, 5)) for n in lengths]


_reference_cache: dict = {}


def cached_reference(key, xs, ys, window):
    if key not in _reference_cache:
        _reference_cache[key] = reference_matrix(xs, ys, window)
    return _reference_cache[key]


# ---------------------------------------------------------------- 1-D series

@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("window", [None, 0, 1, 3, 8, 40])
def test_cdist_ragged_series(backend, window, ragged_series):
    expected = cached_reference(("series", window), ragged_series, ragged_series, window)
    actual = dtw.cdist(ragged_series, window=window, backend=backend)
    assert_dtw_close(actual, expected)
    np.testing.assert_array_equal(actual, actual.T)
    np.testing.assert_array_equal(np.diag(actual), 0.0)
    if window is not None and window < 29:
        assert np.isinf(actual).any()  # |n - m| > window gives inf


@pytest.mark.parametrize("backend", backends())
def test_cdist_equal_length_matrix_input(backend):
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((12, 40))
    expected = reference_matrix(xs, xs)
    assert_dtw_close(dtw.cdist(xs, backend=backend), expected)
    assert_dtw_close(dtw.cdist(xs, window=5, backend=backend), reference_matrix(xs, xs, 5))


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_cdist_with_ys(backend, n_jobs, ragged_series):
    xs, ys = ragged_series[:9], ragged_series[9:]
    for window in (None, 4):
        expected = cached_reference(("series", window), ragged_series, ragged_series, window)[:9, 9:]
        actual = dtw.cdist(xs, ys, window=window, backend=backend, n_jobs=n_jobs)
        assert actual.shape == (9, len(ys))
        assert_dtw_close(actual, expected)


@pytest.mark.parametrize("backend", backends())
def test_paired_series(backend, ragged_series):
    rng = np.random.default_rng(3)
    count = len(ragged_series)
    index_a = np.r_[rng.integers(0, count, 300), 5, 6]
    index_b = np.r_[rng.integers(0, count, 300), 5, 5]  # includes a == b and repeats
    for window in (None, 2):
        expected = cached_reference(("series", window), ragged_series, ragged_series, window)
        actual = dtw.paired(ragged_series, index_a, index_b, window=window, backend=backend)
        assert_dtw_close(actual, expected[index_a, index_b])
    assert dtw.paired(ragged_series, [], [], backend=backend).shape == (0,)


@pytest.mark.parametrize("backend", backends())
def test_paired_matches_cdist(backend):
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(rng.integers(20, 70)) for _ in range(50)]
    full = dtw.cdist(xs, window=12, backend=backend)
    a, b = np.triu_indices(len(xs), k=1)
    np.testing.assert_allclose(dtw.paired(xs, a, b, window=12, backend=backend), full[a, b], rtol=1e-6)
    np.testing.assert_allclose(dtw.paired(xs, b, a, window=12, backend=backend), full[a, b], rtol=1e-6)


@pytest.mark.parametrize("backend", backends())
def test_single_and_empty_collections(backend):
    assert dtw.cdist([], backend=backend).shape == (0, 0)
    assert dtw.cdist([np.ones(3)], backend=backend).tolist() == [[0.0]]
    assert dtw.cdist([np.ones(3)], [], backend=backend).shape == (1, 0)
    assert dtw.cdist([np.array([1.0])], [np.array([3.0])], backend=backend).tolist() == [[2.0]]


@pytest.mark.parametrize("backend", backends())
def test_integer_and_float32_inputs(backend):
    xs = [np.array([0, 1, 2, 3]), np.array([0, 0, 1, 2, 3, 3])]
    assert dtw.cdist(xs, backend=backend)[0, 1] == pytest.approx(0.0, abs=1e-12)
    ys = [np.array([1.5, -2.0, 0.25], dtype=np.float32), np.array([0.0, 2.0], dtype=np.float32)]
    assert dtw.cdist(ys, backend=backend)[0, 1] == pytest.approx(reference_dtw(ys[0], ys[1]), rel=RTOL)


# ---------------------------------------------------------------- frames

@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("window", [None, 0, 2, 6])
def test_cdist_ragged_frames(backend, window, ragged_frames):
    expected = cached_reference(("frames", window), ragged_frames, ragged_frames, window)
    actual = dtw.cdist(ragged_frames, window=window, backend=backend)
    assert_dtw_close(actual, expected)
    np.testing.assert_array_equal(actual, actual.T)
    np.testing.assert_array_equal(np.diag(actual), 0.0)


@pytest.mark.parametrize("backend", backends())
def test_frames_with_ys_and_paired(backend, ragged_frames):
    expected = cached_reference(("frames", None), ragged_frames, ragged_frames, None)
    assert_dtw_close(dtw.cdist(ragged_frames[:7], ragged_frames[7:], backend=backend), expected[:7, 7:])
    rng = np.random.default_rng(5)
    count = len(ragged_frames)
    index_a, index_b = rng.integers(0, count, 200), rng.integers(0, count, 200)
    assert_dtw_close(dtw.paired(ragged_frames, index_a, index_b, backend=backend), expected[index_a, index_b])


@pytest.mark.parametrize("backend", backends())
def test_paired_frames_within_groups(backend):
    """The graph stage's pattern: all pairs inside small, interleaved groups."""
    rng = np.random.default_rng(6)
    frames = [rng.standard_normal((rng.integers(3, 12), 4)) for _ in range(30)]
    groups = rng.integers(0, 6, size=30)
    pairs = [(i, j) for i in range(30) for j in range(i + 1, 30) if groups[i] == groups[j]]
    index_a, index_b = np.array(pairs).T
    expected = [reference_dtw(frames[i], frames[j]) for i, j in pairs]
    np.testing.assert_allclose(dtw.paired(frames, index_a, index_b, backend=backend), expected, rtol=RTOL)


@pytest.mark.parametrize("backend", backends())
def test_frames_large_offset(backend):
    """Frames far from the origin: the GEMM expansion must not lose the distances."""
    rng = np.random.default_rng(9)
    frames = [1000.0 + rng.standard_normal((rng.integers(5, 15), 8)) for _ in range(6)]
    assert_dtw_close(dtw.cdist(frames, backend=backend), reference_matrix(frames, frames))


@pytest.mark.parametrize("backend", backends())
def test_frames_3d_array_input(backend):
    rng = np.random.default_rng(10)
    stack = rng.standard_normal((5, 9, 3))
    assert_dtw_close(dtw.cdist(stack, backend=backend), reference_matrix(stack, stack))


@pytest.mark.parametrize("backend", backends())
def test_small_chunks_and_tiles(monkeypatch, backend, ragged_series, ragged_frames):
    """Force many pair chunks, NumPy batches and frame tiles (fine and coarse)."""
    monkeypatch.setattr(dtw, "_CHUNK_PAIRS", 37)
    monkeypatch.setattr(dtw_numpy, "_LANE_CELLS", 64)
    monkeypatch.setattr(dtw, "_FRAME_BUDGET", 40)
    for window in (None, 3):
        expected = cached_reference(("series", window), ragged_series, ragged_series, window)
        assert_dtw_close(dtw.cdist(ragged_series, window=window, backend=backend, n_jobs=2), expected)
        assert_dtw_close(dtw.cdist(ragged_series[:5], ragged_series[5:], window=window, backend=backend),
                         expected[:5, 5:])
    expected = cached_reference(("frames", None), ragged_frames, ragged_frames, None)
    assert_dtw_close(dtw.cdist(ragged_frames, backend=backend, n_jobs=2), expected)
    assert_dtw_close(dtw.cdist(ragged_frames[:10], ragged_frames[10:], backend=backend), expected[:10, 10:])
    groups = np.arange(len(ragged_frames)) % 3
    index_a, index_b = np.array([(i, j) for i in range(len(groups)) for j in range(len(groups))
                                 if i != j and groups[i] == groups[j]]).T
    assert_dtw_close(dtw.paired(ragged_frames, index_a, index_b, backend=backend), expected[index_a, index_b])


# ---------------------------------------------------------------- dtaidistance

def test_matches_dtaidistance_distance_matrix_fast():
    dtai = pytest.importorskip("dtaidistance.dtw")
    rng = np.random.default_rng(11)
    series = rng.standard_normal((25, 64))
    for window in (None, 0, 5):
        kwargs = {} if window is None else {"window": window + 1}
        expected = dtai.distance_matrix_fast(series, parallel=False, **kwargs)
        for backend in dtw.available_backends():
            actual = dtw.cdist(series, window=window, backend=backend)
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-9)


def test_matches_dtaidistance_ndim():
    dtai_ndim = pytest.importorskip("dtaidistance.dtw_ndim")
    rng = np.random.default_rng(12)
    frames = rng.standard_normal((8, 20, 6))
    expected = dtai_ndim.distance_matrix_fast(frames, parallel=False)
    for backend in dtw.available_backends():
        np.testing.assert_allclose(dtw.cdist(frames, backend=backend), expected, rtol=RTOL, atol=1e-9)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("bad, message", [
    ([np.ones(4), np.array([1.0, np.nan]), np.ones(3)], r"xs\[1\] contains NaN or inf"),
    ([np.ones(4), np.ones(3), np.array([np.inf])], r"xs\[2\] contains NaN or inf"),
    ([np.ones(4), np.zeros(0)], r"xs\[1\] is empty"),
    ([np.ones(4), np.ones((4, 2))], r"xs\[1\] is 2-D .* same ndim"),
    ([np.ones((4, 2)), np.ones((3, 3))], r"xs\[1\] has frame dimension 3"),
    ([np.ones((2, 2, 2))], r"xs\[0\] must be 1-D"),
    ([np.array(["a", "b"])], r"xs\[0\] must hold real numbers"),
])
@pytest.mark.parametrize("backend", backends())
def test_validation_errors(bad, message, backend):
    with pytest.raises(ValueError, match=message):
        dtw.cdist(bad, backend=backend)
    with pytest.raises(ValueError, match=message):
        dtw.paired(bad, [0], [0], backend=backend)


def test_validation_errors_in_ys_and_arguments():
    xs = [np.ones(3), np.ones(4)]
    with pytest.raises(ValueError, match=r"ys\[1\] contains NaN"):
        dtw.cdist(xs, [np.ones(2), np.array([np.nan])])
    with pytest.raises(ValueError, match=r"ys\[0\] is 2-D"):
        dtw.cdist(xs, [np.ones((2, 2))])
    with pytest.raises(ValueError, match="window must be >= 0"):
        dtw.cdist(xs, window=-1)
    with pytest.raises(TypeError, match="window"):
        dtw.cdist(xs, window=2.5)
    with pytest.raises(ValueError, match="backend must be"):
        dtw.cdist(xs, backend="fortran")
    with pytest.raises(IndexError, match=r"index_b\[1\] = 2"):
        dtw.paired(xs, [0, 1], [1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        dtw.paired(xs, [0, 1], [1])
    with pytest.raises(ValueError, match="n_jobs"):
        dtw.cdist(xs, n_jobs=0)


# ---------------------------------------------------------------- backend selection

def test_available_backends_and_auto(monkeypatch):
    monkeypatch.delenv(dtw.ENV_BACKEND, raising=False)
    available = dtw.available_backends()
    assert "numpy" in available
    assert dtw.auto_backend() == available[0]


def test_env_override(monkeypatch):
    xs = [np.arange(5.0), np.arange(7.0)[::-1]]
    expected = reference_dtw(xs[0], xs[1])
    monkeypatch.setenv(dtw.ENV_BACKEND, "numpy")
    assert dtw.auto_backend() == "numpy"
    assert dtw.cdist(xs)[0, 1] == pytest.approx(expected, rel=1e-12)
    monkeypatch.setenv(dtw.ENV_BACKEND, "NumPy ")
    assert dtw.auto_backend() == "numpy"
    monkeypatch.setenv(dtw.ENV_BACKEND, "gpu")
    with pytest.raises(ValueError, match="CHORAL_DTW_BACKEND"):
        dtw.cdist(xs)
    if "c" in dtw.available_backends():
        monkeypatch.setenv(dtw.ENV_BACKEND, "c")
        assert dtw.auto_backend() == "c"
        assert dtw.cdist(xs)[0, 1] == pytest.approx(expected, rel=RTOL)
    monkeypatch.setenv(dtw.ENV_BACKEND, "")
    assert dtw.auto_backend() == dtw.available_backends()[0]


def test_c_backend_unavailable(monkeypatch):
    monkeypatch.delenv(dtw.ENV_BACKEND, raising=False)
    monkeypatch.setattr(dtw, "_load_kernel", lambda: None)
    assert dtw.available_backends() == ("numpy",)
    assert dtw.auto_backend() == "numpy"
    with pytest.raises(RuntimeError, match="compiled DTW kernel"):
        dtw.cdist([np.ones(3), np.ones(2)], backend="c")
    monkeypatch.setenv(dtw.ENV_BACKEND, "c")
    with pytest.raises(RuntimeError, match="compiled DTW kernel"):
        dtw.cdist([np.ones(3), np.ones(2)])
    assert dtw.cdist([np.ones(3), np.ones(2)], backend="numpy")[0, 1] == 0.0


@pytest.mark.skipif("c" not in dtw.available_backends(), reason="compiled kernel not built")
def test_extension_module_importable():
    import choral.kernels._dtw_simd as module

    assert module.LANES >= 1


def test_blas_is_pinned_to_one_thread_while_frames_run_and_restored_after():
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    with dtw._blas:
        with dtw._blas:  # nested (or concurrent) users: only the outermost restores
            if before:
                assert dtw._blas.pinned and blas_threads() == [1] * len(before)
        if before:
            assert dtw._blas.pinned and blas_threads() == [1] * len(before)
    assert not dtw._blas.pinned
    assert blas_threads() == before


def test_the_backend_that_ran_is_logged(caplog, ragged_series):
    with caplog.at_level("DEBUG", logger="choral.kernels.dtw"):
        dtw.paired(ragged_series, [0], [1], backend="numpy", n_jobs=1)
    assert any("DTW backend numpy, 1 thread(s)" in record.getMessage() for record in caplog.records)
