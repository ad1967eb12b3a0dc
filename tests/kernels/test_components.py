"""Tests for choral.kernels.components."""

from __future__ import annotations

import numpy as np

from choral.kernels.components import component_labels


def test_labels_follow_the_smallest_node_of_each_component() -> None:
    labels = component_labels(6, np.array([5, 3]), np.array([4, 1]))
    assert labels.tolist() == [0, 1, 2, 1, 3, 3]
    assert labels.dtype == np.int64


def test_no_edges_and_no_nodes() -> None:
    assert component_labels(3, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == [0, 1, 2]
    assert component_labels(0, np.zeros(0, np.int64), np.zeros(0, np.int64)).size == 0


def test_many_duplicate_edges_still_connect() -> None:
    """Duplicate edges (summed into one weight) connect like a single edge."""
    u = np.zeros(256, np.int64)
    v = np.ones(256, np.int64)
    assert component_labels(3, u, v).tolist() == [0, 0, 1]
