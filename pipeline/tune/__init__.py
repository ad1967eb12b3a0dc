"""``choral tune``: choose α, λ, temperature and threshold scale by cross-validation on annotated cuts.

- :mod:`.stage`: :func:`tune_stage`, the stage ``choral tune`` and ``choral run`` run (skip, force,
  sidecar, the untuned case below 2 annotated cuts);
- :mod:`.crossval`: :func:`tune_params`, the k-fold search over the grid and the confidence check;
- :mod:`.grid`: :class:`TuneConfig`, the grid and folds, and :func:`parse_grid` for option strings;
- :mod:`.params`: the one writer of ``params.yaml`` and its ``params.json`` report.
"""

from .crossval import CONFIDENCE_LEVELS, TuneSummary, tune_params
from .grid import GRID_AXES, TuneConfig, parse_grid
from .params import report_path, write_params
from .stage import MIN_ANNOTATED, TuneStageSummary, tune_stage

__all__ = ["CONFIDENCE_LEVELS", "GRID_AXES", "MIN_ANNOTATED", "TuneConfig", "TuneStageSummary", "TuneSummary",
           "parse_grid", "report_path", "tune_params", "tune_stage", "write_params"]
