"""The graph metrics: how far apart two cuts are, by name.

A metric is one registered function ``distances(series, pair_a, pair_b, window)``
returning the float64 distance of every pair ``(series[pair_a[k]], series[pair_b[k]])``,
plus what it declares:

- ``field``: the per-cut array it reads, ``embedding`` (``custom.embedding``, the
  pooled utterance vector) or ``frames`` (``custom.frames``, encoder frames);
- ``ndim``: the rank that array must have (1: a vector, 2: ``(T, D)`` frames);
- ``same_shape``: whether every cut's array must have the same shape (True), or
  only the same feature dimension, ``shape[1:]`` (False: DTW aligns any lengths);
- ``description``: one line, listed by ``choral graph --help``.

``window`` is the Sakoe-Chiba radius of DTW metrics (None: unconstrained);
other metrics ignore it. A ``ValueError`` raised by a metric reaches the user
as an input error on the grouped manifest. Adding a metric::

    @register_metric("my-metric", field="embedding", ndim=1, same_shape=True,
                     description="what it measures")
    def my_metric(series, pair_a, pair_b, window):
        ...

The built-in metrics register themselves below, in the order the CLI lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...kernels import dtw
from ..errors import ChoralError

__all__ = ["DistanceFn", "Metric", "get_metric", "metric_names", "register_metric", "unregister_metric"]

Field = Literal["embedding", "frames"]
DistanceFn = Callable[[Sequence[np.ndarray], np.ndarray, np.ndarray, int | None], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A registered metric: its distance function and what it needs from every cut."""

    name: str
    distances: DistanceFn
    field: Field
    ndim: int
    same_shape: bool
    description: str


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, field: Field, ndim: int, same_shape: bool,
                    description: str) -> Callable[[DistanceFn], DistanceFn]:
    """Decorator that registers ``distances`` as the metric ``name`` (returns the function unchanged)."""
    if field not in ("embedding", "frames"):
        raise ValueError(f"metric {name!r}: field must be 'embedding' or 'frames', not {field!r}")
    if ndim not in (1, 2):
        raise ValueError(f"metric {name!r}: ndim must be 1 or 2, not {ndim!r}")

    def register(distances: DistanceFn) -> DistanceFn:
        if name in _METRICS:
            raise ValueError(f"a graph metric named {name!r} is already registered")
        _METRICS[name] = Metric(name, distances, field, ndim, same_shape, description)
        return distances

    return register


def unregister_metric(name: str) -> None:
    """Remove a registered metric (for tests and plug-ins that replace one); KeyError if unknown."""
    del _METRICS[name]


def metric_names() -> tuple[str, ...]:
    """Names of the registered metrics, in registration order."""
    return tuple(_METRICS)


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``; a ChoralError lists the known ones otherwise."""
    try:
        return _METRICS[name]
    except (KeyError, TypeError):
        raise ChoralError(f"unknown metric {name!r}; choose one of {', '.join(_METRICS)}") from None


@register_metric("dtw-vector", field="embedding", ndim=1, same_shape=False,
                 description="DTW between the pooled embeddings, each vector read as a time series (the paper)")
def dtw_vector(series: Sequence[np.ndarray], pair_a: np.ndarray, pair_b: np.ndarray,
               window: int | None) -> np.ndarray:
    """DTW between 1-D series (:func:`choral.kernels.dtw.paired`)."""
    return dtw.paired(series, pair_a, pair_b, window=window)


@register_metric("dtw-frames", field="frames", ndim=2, same_shape=False,
                 description="DTW between encoder frame sequences (needs the frames: decode --save-frames)")
def dtw_frames(series: Sequence[np.ndarray], pair_a: np.ndarray, pair_b: np.ndarray,
               window: int | None) -> np.ndarray:
    """DTW between ``(T, D)`` frame sequences (:func:`choral.kernels.dtw.paired`)."""
    return dtw.paired(series, pair_a, pair_b, window=window)


@register_metric("cosine", field="embedding", ndim=1, same_shape=True,
                 description="one minus the cosine similarity of the pooled embeddings (a cheap baseline)")
def cosine(series: Sequence[np.ndarray], pair_a: np.ndarray, pair_b: np.ndarray,
           window: int | None) -> np.ndarray:
    """One minus cosine similarity for each pair; a zero vector is at distance 1 from everything."""
    matrix = np.stack(series).astype(np.float64)
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0
    unit = matrix / norms[:, None]
    return 1.0 - np.einsum("ij,ij->i", unit[pair_a], unit[pair_b])
