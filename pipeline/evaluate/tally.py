"""Word-error tallies of ``choral eval``: per cut, per slice, per split, and the whole report.

Beside the WERs each slice counts the cuts choral *helped* (its label has fewer word errors than
the teacher's 1-best) and *harmed* (more errors); help rate = helped / cuts, harm rate = harmed /
cuts (cuts with equal errors count in neither). Each slice also holds the calibration of choral's
confidence against exact correctness (:mod:`.calibration`).

``report.json`` is :meth:`EvalReport.to_dict`; :func:`report_rows` turns one split of it back into
table rows, so report.md and the command-line tables (from a fresh or an up-to-date report) show
the same numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..fields import SOURCES
from ..text import TextNormalizer
from .calibration import Calibration

SYSTEMS: tuple[str, ...] = ("teacher", "choral", "oracle")
SPLITS: tuple[str, ...] = ("unannotated", "annotated")


@dataclass(frozen=True)
class CutScore:
    """Word errors of each system on one cut, and the cut's reference length."""

    n_words: int
    errors: Mapping[str, int]
    confidence: float | None = None     # choral's confidence in its label (None: the cut has none)
    correct: bool = False               # the choral label equals the reference after normalisation

    @property
    def helped(self) -> bool:
        """choral's label has fewer word errors than the teacher's 1-best."""
        return self.errors["choral"] < self.errors["teacher"]

    @property
    def harmed(self) -> bool:
        """choral's label has more word errors than the teacher's 1-best."""
        return self.errors["choral"] > self.errors["teacher"]


def relative_reduction(teacher_wer: float, choral_wer: float) -> float:
    """(teacher - choral) / teacher; 0 when the teacher makes no errors."""
    return (teacher_wer - choral_wer) / teacher_wer if teacher_wer > 0 else 0.0


@dataclass
class Tally:
    """Accumulated word errors per system over one slice of cuts."""

    n_cuts: int = 0
    n_words: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SYSTEMS, 0))
    n_helped: int = 0
    n_harmed: int = 0
    calibration: Calibration = field(default_factory=Calibration)
    n_without_confidence: int = 0

    def add(self, score: CutScore) -> None:
        self.n_cuts += 1
        self.n_words += score.n_words
        for system in SYSTEMS:
            self.errors[system] += score.errors[system]
        self.n_helped += score.helped
        self.n_harmed += score.harmed
        if score.confidence is None:
            self.n_without_confidence += 1
        else:
            self.calibration.add(score.confidence, score.correct)

    def wer(self, system: str) -> float:
        """Corpus-level WER; with no reference words, the raw error count (0 for an empty slice)."""
        return self.errors[system] / max(self.n_words, 1)

    @property
    def relative_wer_reduction(self) -> float:
        return relative_reduction(self.wer("teacher"), self.wer("choral"))

    @property
    def help_rate(self) -> float:
        """Cuts whose choral label has fewer errors than the teacher's, over all cuts (0 when empty)."""
        return self.n_helped / max(self.n_cuts, 1)

    @property
    def harm_rate(self) -> float:
        """Cuts whose choral label has more errors than the teacher's, over all cuts (0 when empty)."""
        return self.n_harmed / max(self.n_cuts, 1)

    def outcome(self) -> dict:
        """The help / harm / calibration keys of ``report.json`` for this slice."""
        return {"help_rate": self.help_rate, "harm_rate": self.harm_rate, "n_helped": self.n_helped,
                "n_harmed": self.n_harmed, "ece": self.calibration.ece,
                "n_without_confidence": self.n_without_confidence, "calibration": self.calibration.to_dict()}


@dataclass
class SplitReport:
    """Tallies of one split (annotated or unannotated): overall, per ``--by`` value, choral sources."""

    by_fields: tuple[str, ...]
    overall: Tally = field(default_factory=Tally)
    by: dict[str, dict[str, Tally]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)
    n_missing_references: int = 0

    def __post_init__(self) -> None:
        for name in self.by_fields:
            self.by.setdefault(name, {})

    def add(self, score: CutScore, values: Mapping[str, str], source: str) -> None:
        self.overall.add(score)
        for name in self.by_fields:
            self.by[name].setdefault(values[name], Tally()).add(score)
        self.sources[source] += 1

    def groups(self, name: str) -> list[tuple[str, Tally]]:
        """The values of one ``--by`` field with their tallies, sorted by value."""
        return sorted(self.by[name].items())

    def to_dict(self) -> dict:
        """The split's part of ``report.json`` (required keys first, extras after)."""
        out: dict = {system: {"wer": self.overall.wer(system),
                              "by": {name: {value: tally.wer(system) for value, tally in self.groups(name)}
                                     for name in self.by_fields}}
                     for system in SYSTEMS}
        out["relative_wer_reduction"] = self.overall.relative_wer_reduction
        out["n_cuts"] = self.overall.n_cuts
        out["n_words"] = self.overall.n_words
        out["n_missing_references"] = self.n_missing_references
        out["sources"] = {**dict.fromkeys(SOURCES, 0), **dict(sorted(self.sources.items()))}
        out["breakdown"] = {name: {value: {"n_cuts": tally.n_cuts, "n_words": tally.n_words,
                                           "relative_wer_reduction": tally.relative_wer_reduction,
                                           **tally.outcome()}
                                   for value, tally in self.groups(name)}
                            for name in self.by_fields}
        out.update(self.overall.outcome())
        return out


@dataclass(frozen=True)
class ReportRow:
    """One table row: a slice of a split with its WERs (fractions) and counts."""

    label: str
    n_cuts: int
    n_words: int
    wer: Mapping[str, float]
    relative_wer_reduction: float
    help_rate: float | None = None      # None: a report.json written before help/harm were counted
    harm_rate: float | None = None
    ece: float | None = None            # None: no cut with a confidence (or an older report.json)


def report_rows(split: Mapping) -> list[ReportRow]:
    """Table rows of one split of ``report.json``: overall first, then every value of every ``--by`` field."""
    rows = [ReportRow("overall", split["n_cuts"], split["n_words"], {s: split[s]["wer"] for s in SYSTEMS},
                      split["relative_wer_reduction"], split.get("help_rate"), split.get("harm_rate"),
                      split.get("ece"))]
    for name, values in split["breakdown"].items():
        rows.extend(ReportRow(f"{name} = {value}", counts["n_cuts"], counts["n_words"],
                              {s: split[s]["by"][name][value] for s in SYSTEMS}, counts["relative_wer_reduction"],
                              counts.get("help_rate"), counts.get("harm_rate"), counts.get("ece"))
                    for value, counts in values.items())
    return rows


@dataclass
class EvalReport:
    """Result of :func:`~.stage.evaluate`: per-split tallies plus what was evaluated."""

    rescored: Path
    references: Path
    by: tuple[str, ...]
    normalizer: TextNormalizer
    splits: dict[str, SplitReport]

    def to_dict(self) -> dict:
        """The ``report.json`` content: ``{"unannotated": {...}, "annotated": {...}}``."""
        return {name: self.splits[name].to_dict() for name in SPLITS}

    def rows(self, split: str) -> list[ReportRow]:
        """Table rows of one split: overall first, then every value of every ``--by`` field."""
        return report_rows(self.splits[split].to_dict())

    @property
    def n_missing_references(self) -> int:
        return sum(split.n_missing_references for split in self.splits.values())
