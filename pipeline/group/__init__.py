"""``choral group``: put cuts whose n-best hypotheses overlap into the same group.

- :mod:`.stage`: the stage, ``group_manifest`` (decoded manifest in, grouped manifest out);
- :mod:`.grouping`: ``group_hypotheses``, its config and result, and the algorithm's notes;
- :mod:`.lsh`: MinHash signatures, LSH banding and verified links (steps 1-3);
- :mod:`.split`: splitting components larger than ``max_group_size`` (step 4).
"""

from .grouping import Grouping, GroupingConfig, detection_probability, group_hypotheses
from .stage import GroupSummary, group_id, group_manifest

__all__ = ["GroupSummary", "Grouping", "GroupingConfig", "detection_probability", "group_hypotheses", "group_id",
           "group_manifest"]
