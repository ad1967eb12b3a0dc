"""``choral graph``: link cuts of the same group that sound alike.

- :mod:`.stage`: the stage, ``build_graph``, its config and the threshold rules;
- :mod:`.metrics`: the registry of distances between cuts (``register_metric``);
- :mod:`.store`: ``graph.npz``, the :class:`CutGraph` written here and read by tune and propagate;
- :mod:`.threshold`: fitting the distance threshold to labelled pairs.
"""

from .metrics import Metric, get_metric, metric_names, register_metric, unregister_metric
from .stage import GraphConfig, GraphSummary, build_graph, choose_threshold, pair_distances, within_group_pairs
from .store import CutGraph, load_adjacency
from .threshold import ThresholdFit, evaluate_threshold, fit_f1_threshold, quantile_threshold

__all__ = ["CutGraph", "GraphConfig", "GraphSummary", "Metric", "ThresholdFit", "build_graph", "choose_threshold",
           "evaluate_threshold", "fit_f1_threshold", "get_metric", "load_adjacency", "metric_names",
           "pair_distances", "quantile_threshold", "register_metric", "unregister_metric", "within_group_pairs"]
