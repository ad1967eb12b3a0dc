"""``choral propagate``: spread good hypotheses across the graph and fuse with the teacher.

- :mod:`.config`: :class:`PropagateConfig` and :func:`load_params` (the params.yaml ``choral tune`` writes);
- :mod:`.labels`: which transcripts compete within a group, and each cut's prior over them;
- :mod:`.engine`: the solve, borrowed candidates and the fusion, on entries and an adjacency
  (no file I/O); ``choral tune`` reuses its steps;
- :mod:`.stage`: reading the grouped manifest and graph, :func:`propagate_manifest` (skip, force, sidecar).
"""

from .config import PropagateConfig, load_params
from .engine import BatchPriors, BatchSupport, batch_priors, borrowed_candidates, fuse, propagate_batch, rescore
from .labels import CutEntry, GroupLabels, build_group_labels, log_posterior, own_log_posteriors, prior_row
from .stage import PropagateSummary, propagate_manifest, read_entries, read_grouped_and_graph

__all__ = ["BatchPriors", "BatchSupport", "CutEntry", "GroupLabels", "PropagateConfig", "PropagateSummary",
           "batch_priors", "borrowed_candidates", "build_group_labels", "fuse", "load_params", "log_posterior",
           "own_log_posteriors", "prior_row", "propagate_batch", "propagate_manifest", "read_entries",
           "read_grouped_and_graph", "rescore"]
