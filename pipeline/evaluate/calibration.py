"""Calibration of choral's confidence: a reliability table and the expected calibration error.

A cut's label is *correct* when its normalised text equals the normalised reference word for word.
Its confidence ``c`` (``custom.choral[0].confidence``, in [0, 1]) falls in one of ``B`` equal-width
bins, bin ``b = min(floor(B c), B - 1)`` covering ``[b/B, (b+1)/B)`` (the last one includes 1).
For bin ``b`` with ``n_b`` cuts, mean confidence ``conf_b`` and accuracy ``acc_b`` (the fraction
correct), the expected calibration error over ``n = sum_b n_b`` cuts is

    ECE = sum_b (n_b / n) |acc_b - conf_b|

(empty bins add nothing; ECE is undefined, ``None``, when ``n = 0``). A calibrated confidence of
0.8 is right 80% of the time, so ECE 0 means the confidence can be read as a probability of
being right; a high-confidence wrong label makes ECE grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

N_BINS = 10


def confidence_bin(confidence: float, n_bins: int = N_BINS) -> int:
    """The bin of ``confidence`` in [0, 1]: ``min(floor(n_bins c), n_bins - 1)``."""
    return min(int(math.floor(confidence * n_bins)), n_bins - 1)


@dataclass
class Calibration:
    """Per-bin counts, summed confidences and correct labels of one slice of cuts."""

    n_bins: int = N_BINS
    counts: list[int] = field(default_factory=list)
    confidence_sums: list[float] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, not {self.n_bins}")
        self.counts = self.counts or [0] * self.n_bins
        self.confidence_sums = self.confidence_sums or [0.0] * self.n_bins
        self.correct = self.correct or [0] * self.n_bins

    def add(self, confidence: float, correct: bool) -> None:
        """Count one cut with its confidence (in [0, 1]) and whether its label was right."""
        b = confidence_bin(confidence, self.n_bins)
        self.counts[b] += 1
        self.confidence_sums[b] += confidence
        self.correct[b] += bool(correct)

    @property
    def n(self) -> int:
        return sum(self.counts)

    @property
    def accuracy(self) -> float | None:
        """Fraction of correct labels over all counted cuts (None when none)."""
        return sum(self.correct) / self.n if self.n else None

    @property
    def mean_confidence(self) -> float | None:
        return sum(self.confidence_sums) / self.n if self.n else None

    @property
    def ece(self) -> float | None:
        """``sum_b (n_b / n) |acc_b - conf_b|`` (None when no cut was counted)."""
        if not self.n:
            return None
        gap = sum(abs(self.correct[b] - self.confidence_sums[b]) for b in range(self.n_bins))
        return gap / self.n  # n_b/n * |correct_b/n_b - sum_b/n_b| = |correct_b - sum_b| / n

    def bins(self) -> list[dict]:
        """The reliability table: per bin its bounds, count, mean confidence and accuracy (None if empty)."""
        out = []
        for b in range(self.n_bins):
            n_b = self.counts[b]
            out.append({"lower": b / self.n_bins, "upper": (b + 1) / self.n_bins, "n": n_b,
                        "confidence": self.confidence_sums[b] / n_b if n_b else None,
                        "accuracy": self.correct[b] / n_b if n_b else None})
        return out

    def to_dict(self) -> dict:
        """``report.json``'s calibration record of one slice."""
        return {"ece": self.ece, "n": self.n, "accuracy": self.accuracy,
                "mean_confidence": self.mean_confidence, "bins": self.bins()}
