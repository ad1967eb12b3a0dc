"""The filtered size-capped union of :mod:`choral.pipeline.group.split` equals one Python step per pair."""

from __future__ import annotations

import numpy as np
import pytest

from choral.pipeline.group import split


def _one_by_one(n: int, u: np.ndarray, v: np.ndarray, cap: int) -> np.ndarray:
    parent, size = list(range(n)), [1] * n
    for a, b in zip(u.tolist(), v.tolist()):
        a, b = split._find(parent, a), split._find(parent, b)
        if a == b or size[a] + size[b] > cap:
            continue
        if b < a:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
    return np.array([split._find(parent, i) for i in range(n)])


@pytest.mark.parametrize("n, cap, seed", [(50, 7, 0), (700, 40, 1), (3000, 200, 2), (3000, 3000, 3), (5, 1, 4)])
def test_capped_union_matches_the_sequential_merge(n: int, cap: int, seed: int, monkeypatch) -> None:
    monkeypatch.setattr(split, "_FIRST_ROUND", 64)  # many rounds even on small inputs
    rng = np.random.default_rng(seed)
    u, v = np.triu_indices(n, k=1)
    w = rng.integers(0, 50, u.size).astype(float)  # many ties: they keep their input order
    order = np.argsort(-w, kind="stable")
    expected = _one_by_one(n, u[order], v[order], cap)
    got = split.capped_union(n, u, v, w, cap)
    assert np.array_equal(got, expected)
    assert np.bincount(got).max() <= cap
