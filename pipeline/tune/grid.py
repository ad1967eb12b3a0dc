"""What ``choral tune`` searches: the grid of α, λ, temperature and threshold scale, and the folds."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..errors import ConfigError
from ..propagate import PropagateConfig

GRID_AXES: tuple[str, ...] = ("alpha", "fusion_weight", "temperature", "threshold_scale")


@dataclass(frozen=True)
class TuneConfig:
    """The grid tried (every combination of the four axes) and the folds of the annotated cuts.

    Every axis value must be a valid value of the PropagateConfig field of the same name (a threshold
    scale multiplies the base config's): PropagateConfig's range rules check them.
    """

    alpha: tuple[float, ...] = (0.5, 0.9, 0.99)
    fusion_weight: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
    temperature: tuple[float, ...] = (0.5, 1.0, 2.0)
    threshold_scale: tuple[float, ...] = (0.8, 1.0, 1.25)
    folds: int = 5
    seed: int = 0                       # of the fold assignment
    selection: Literal["one-se", "min"] = "one-se"   # one-se: closest to the base values within 1 SE of the best
    calibrate: bool = True              # cross-fit the calibration model (propagate.calibration) on annotated cuts
    calibration_fit: Literal["scale", "full"] = "scale"  # scale: a beta_0 + b (2 numbers); full: every coefficient
    calibration_strength: float = 0.25  # kappa: pull toward the prior (larger: trust the prior more)
    calibration_min_each: int = 3       # fit only with at least this many right and this many wrong rows (else prior)
    answer_strength: float = 1.0        # > 0: rescale the answer model (propagate.answer_calibration), this pull
    min_annotated: int = 10             # fewer annotated cuts: no grid search (the base values hold)
    nearest: tuple[int, ...] = ()       # k-nearest edge counts tried, each a whole search (empty: the base's k)
    max_cuts: int = 3_000               # cuts of annotated groups searched in full (the whole grid); above: a sample
    sample_cuts: int = 1_000            # above max_cuts: whole groups sampled up to this many, searched coarse to fine

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError("folds", f"must be at least 2, not {self.folds}")
        if self.selection not in ("one-se", "min"):
            raise ConfigError("selection", f"must be one-se or min, not {self.selection!r}")
        if self.calibration_fit not in ("scale", "full"):
            raise ConfigError("calibration_fit", f"must be scale or full, not {self.calibration_fit!r}")
        if self.min_annotated < 2:
            raise ConfigError("min_annotated", f"must be at least 2 (cross-validation needs two folds), "
                                               f"not {self.min_annotated}")
        if self.calibration_min_each < 0:
            raise ConfigError("calibration_min_each", f"must be 0 or a positive count, not {self.calibration_min_each}")
        if not self.answer_strength >= 0:
            raise ConfigError("answer_strength", f"must be >= 0 (0: no answer model), not {self.answer_strength}")
        if not self.calibration_strength > 0:
            raise ConfigError("calibration_strength", f"must be positive, not {self.calibration_strength}")
        for axis in GRID_AXES:
            if not getattr(self, axis):
                raise ConfigError(axis, "needs at least one value")
            for value in getattr(self, axis):
                PropagateConfig(**{axis: value})  # its ConfigError names the field, which is the axis
        for name in ("max_cuts", "sample_cuts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a positive number of cuts, not {value!r}")
        if self.sample_cuts > self.max_cuts:
            raise ConfigError("sample_cuts", f"must be at most max_cuts ({self.max_cuts}), not {self.sample_cuts}")
        for k in self.nearest:
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ConfigError("nearest", f"must be counts >= 0 (0: threshold edges only), not {k!r}")

    @property
    def grid(self) -> dict[str, tuple[float, ...]]:
        """The four axes by name (what the tune sidecar records)."""
        return {axis: getattr(self, axis) for axis in GRID_AXES}

    @property
    def size(self) -> int:
        """Combinations of one search (the k-nearest values, when given, each run one)."""
        return len(self.alpha) * len(self.fusion_weight) * len(self.temperature) * len(self.threshold_scale)


def parse_grid(values: dict[str, str | None], base: TuneConfig = TuneConfig()) -> TuneConfig:
    """``base`` with the axes given as comma-separated option strings (None keeps the axis)."""
    axes: dict = {}  # axis name -> values
    for name, text in values.items():
        if text is None:
            continue
        try:
            axes[name] = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ConfigError(name, f"must be comma-separated numbers, not {text!r}") from None
    return replace(base, **axes)
