"""Per-condition figures of the protocol, read from ``choral eval``'s report.json, and RESULTS.md.

A :class:`Slice` holds counts (cuts, words, word errors per system, helped / harmed cuts, the calibration
bins), so slices of several pools add up exactly: WER = errors / words, relative reduction =
(teacher - choral) / teacher, help / harm rate = helped / harmed over cuts, and the ECE of the merged
bins, ``sum_b |correct_b - confidence_sum_b| / n`` (the formula of ``choral.pipeline.evaluate.calibration``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from choral.pipeline.evaluate import N_BINS, Calibration

SYSTEMS = ("teacher", "choral", "oracle")
MAX_EXCESS = 0.002          # the bound: no condition worse than the teacher by more than 0.2 points


@dataclass
class Slice:
    """Additive counts of one slice of unannotated cuts (one condition of one pool, or a sum of them)."""

    n_cuts: int = 0
    n_words: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SYSTEMS, 0))
    n_helped: int = 0
    n_harmed: int = 0
    bin_counts: list[int] = field(default_factory=lambda: [0] * N_BINS)
    bin_confidence: list[float] = field(default_factory=lambda: [0.0] * N_BINS)
    bin_correct: list[int] = field(default_factory=lambda: [0] * N_BINS)

    def __add__(self, other: Slice) -> Slice:
        return Slice(self.n_cuts + other.n_cuts, self.n_words + other.n_words,
                     {s: self.errors[s] + other.errors[s] for s in SYSTEMS},
                     self.n_helped + other.n_helped, self.n_harmed + other.n_harmed,
                     [a + b for a, b in zip(self.bin_counts, other.bin_counts)],
                     [a + b for a, b in zip(self.bin_confidence, other.bin_confidence)],
                     [a + b for a, b in zip(self.bin_correct, other.bin_correct)])

    def wer(self, system: str) -> float:
        return self.errors[system] / max(self.n_words, 1)

    @property
    def reduction(self) -> float:
        teacher = self.wer("teacher")
        return (teacher - self.wer("choral")) / teacher if teacher > 0 else 0.0

    @property
    def excess(self) -> float:
        """choral WER - teacher WER (positive: choral made the slice worse)."""
        return self.wer("choral") - self.wer("teacher")

    @property
    def help_rate(self) -> float:
        return self.n_helped / max(self.n_cuts, 1)

    @property
    def harm_rate(self) -> float:
        return self.n_harmed / max(self.n_cuts, 1)

    @property
    def calibration(self) -> Calibration:
        return Calibration(N_BINS, list(self.bin_counts), list(self.bin_confidence), list(self.bin_correct))

    @property
    def ece(self) -> float | None:
        return self.calibration.ece


def _slice(wers: Mapping[str, float], counts: Mapping) -> Slice:
    """A slice from report.json's WERs and its counts record (overall split or one breakdown value)."""
    n_words = int(counts["n_words"])
    bins = counts["calibration"]["bins"]
    return Slice(int(counts["n_cuts"]), n_words, {s: round(wers[s] * n_words) for s in SYSTEMS},
                 int(counts["n_helped"]), int(counts["n_harmed"]),
                 [int(b["n"]) for b in bins], [b["n"] * (b["confidence"] or 0.0) for b in bins],
                 [round(b["n"] * (b["accuracy"] or 0.0)) for b in bins])


def condition_slices(report: Mapping, field_name: str = "accent") -> dict[str, Slice]:
    """The unannotated cuts of report.json per value of its ``--by`` field (the condition)."""
    split = report["unannotated"]
    return {value: _slice({s: split[s]["by"][field_name][value] for s in SYSTEMS}, counts)
            for value, counts in split["breakdown"][field_name].items()}


def overall_slice(report: Mapping) -> Slice:
    split = report["unannotated"]
    return _slice({s: split[s]["wer"] for s in SYSTEMS}, split)


def annotated_counts(report: Mapping, field_name: str = "accent") -> dict[str, int]:
    """Annotated cuts per condition."""
    return {value: int(counts["n_cuts"])
            for value, counts in report["annotated"]["breakdown"].get(field_name, {}).items()}


def total(slices: Sequence[Slice]) -> Slice:
    out = Slice()
    for s in slices:
        out = out + s
    return out


def mean_reduction(slices: Mapping[str, Slice], control: str) -> float:
    """Mean relative WER reduction over the conditions other than ``control`` (0 when there is none)."""
    values = [s.reduction for name, s in slices.items() if name != control]
    return sum(values) / len(values) if values else 0.0


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


TABLE_HEADER = ["| condition | unannotated cuts | annotated cuts | teacher WER | choral WER | oracle WER | "
                "relative reduction | help rate | harm rate | ECE | threshold from (pairs / positive) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


def table_row(label: str, s: Slice, annotated: int | str, pairs: str) -> str:
    """One Markdown row: counts, WERs, reduction, help / harm rates, ECE, threshold pairs."""
    worse = " (worse)" if s.excess > MAX_EXCESS else ""
    annotated_text = f"{annotated:,}" if isinstance(annotated, int) else annotated
    return (f"| {label} | {s.n_cuts:,} | {annotated_text} | {pct(s.wer('teacher'))} | {pct(s.wer('choral'))}{worse} | "
            f"{pct(s.wer('oracle'))} | {pct(s.reduction)} | {pct(s.help_rate)} | {pct(s.harm_rate)} | "
            f"{num(s.ece)} | {pairs} |")


def reliability_table(s: Slice) -> list[str]:
    """The merged reliability table (10 bins) as Markdown."""
    lines = ["| confidence | cuts | mean confidence | accuracy |", "|---|---:|---:|---:|"]
    for b in s.calibration.bins():
        lines.append(f"| {b['lower']:.1f}-{b['upper']:.1f} | {b['n']:,} | {num(b['confidence'])} | "
                     f"{num(b['accuracy'])} |")
    return lines


def headline(slices: Mapping[str, Slice], control: str) -> str:
    """Mean reduction over the non-control conditions, the control's change, the worst excess, overall harm."""
    everything = total(list(slices.values()))
    worst_name, worst = max(((n, s.excess) for n, s in slices.items()), key=lambda kv: kv[1],
                            default=("-", 0.0))
    control_text = (f"{100 * slices[control].excess:+.2f} points" if control in slices else "not run")
    return (f"mean relative WER reduction over the {sum(n != control for n in slices)} non-control conditions "
            f"**{pct(mean_reduction(slices, control))}** (target >= 20%); {control} choral - teacher = "
            f"{control_text} (target <= +0.20); worst condition {worst_name} {100 * worst:+.2f} points; "
            f"harm rate {pct(everything.harm_rate)} of {everything.n_cuts:,} unannotated cuts (target <= 2%)")
