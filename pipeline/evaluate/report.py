"""The files of ``choral eval``: ``report.json``, ``report.md`` (one table per split) and ``report.png``
(teacher vs choral WER on unannotated cuts, overall and per value of the first ``--by`` field)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChoralError
from ..manifest import atomic_output, write_json
from .tally import SPLITS, EvalReport, ReportRow, Tally

MAX_CHART_GROUPS = 40


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put the three files."""

    json: Path
    markdown: Path
    chart: Path

    @property
    def all(self) -> list[Path]:
        return [self.json, self.markdown, self.chart]


def report_paths(out_dir: str | Path) -> ReportPaths:
    """The three report files inside ``out_dir``."""
    out_dir = Path(out_dir)
    return ReportPaths(out_dir / "report.json", out_dir / "report.md", out_dir / "report.png")


def percent(value: float) -> str:
    """A WER or reduction as a percentage with two decimals."""
    return f"{100 * value:.2f}%"


def optional_percent(value: float | None) -> str:
    """A rate as a percentage, or ``-`` when it is undefined (no cut) or absent (an older report)."""
    return "-" if value is None else percent(value)


def optional_number(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or ``-`` when it is undefined."""
    return "-" if value is None else f"{value:.{digits}f}"


def _markdown_table(rows: list[ReportRow]) -> list[str]:
    lines = ["| slice | cuts | words | teacher WER | choral WER | oracle WER | relative WER reduction | "
             "help rate | harm rate | ECE |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row.label} | {row.n_cuts:,} | {row.n_words:,} | {percent(row.wer['teacher'])} | "
                     f"{percent(row.wer['choral'])} | {percent(row.wer['oracle'])} | "
                     f"{percent(row.relative_wer_reduction)} | {optional_percent(row.help_rate)} | "
                     f"{optional_percent(row.harm_rate)} | {optional_number(row.ece)} |")
    return lines


def reliability_lines(calibration: dict) -> list[str]:
    """The reliability table of one slice's ``calibration`` record (report.json) as Markdown."""
    lines = ["| confidence | cuts | mean confidence | accuracy | gap |", "|---|---:|---:|---:|---:|"]
    for b in calibration["bins"]:
        gap = None if not b["n"] else b["accuracy"] - b["confidence"]
        lines.append(f"| {b['lower']:.1f}-{b['upper']:.1f} | {b['n']:,} | {optional_number(b['confidence'])} | "
                     f"{optional_number(b['accuracy'])} | {optional_number(gap)} |")
    return lines


def _markdown_calibration(data: dict) -> list[str]:
    """Calibration of one split: ECE and the reliability table (nothing for an older report.json)."""
    calibration = data.get("calibration")
    if not calibration or not calibration["n"]:
        return []
    lines = ["", f"Calibration of choral's confidence ({calibration['n']:,} cuts; correct = label equals the "
                 f"reference after normalisation): accuracy {optional_number(calibration['accuracy'])}, mean "
                 f"confidence {optional_number(calibration['mean_confidence'])}, "
                 f"**ECE {optional_number(calibration['ece'])}**.", ""]
    return lines + reliability_lines(calibration)


def _markdown_split(report: EvalReport, split: str) -> list[str]:
    data = report.splits[split]
    title = "Unannotated cuts (headline)" if split == "unannotated" else "Annotated cuts"
    lines = [f"## {title}", ""]
    if data.overall.n_cuts == 0:
        lines.append("No cuts in this split.")
    else:
        lines.extend(_markdown_table(report.rows(split)))
    summary = data.to_dict()
    if data.overall.n_cuts:
        lines.extend(_markdown_calibration(summary))
    sources = summary["sources"]
    lines += ["", "Source of the choral label: " + ", ".join(f"{k} {v:,}" for k, v in sources.items()) + "."]
    if data.overall.n_without_confidence:
        lines.append(f"Without a confidence (left out of the calibration): {data.overall.n_without_confidence:,} "
                     "cuts.")
    if data.n_missing_references:
        lines.append(f"Skipped without a reference: {data.n_missing_references:,} cuts.")
    return lines + [""]


def render_markdown(report: EvalReport) -> str:
    """``report.md``: one table per split, rows = overall and each ``--by`` value."""
    norm = report.normalizer
    lines = ["# choral eval", "",
             f"- rescored manifest: `{report.rescored}`",
             f"- references: `{report.references}`",
             f"- text normaliser: digits={norm.digits}, lowercase={norm.lowercase}, punctuation removed",
             "- WER is corpus-level (word errors / reference words); oracle = best n-best entry per cut; "
             "relative WER reduction = (teacher - choral) / teacher.",
             "- help rate / harm rate = cuts whose choral label has fewer / more word errors than the teacher's "
             "1-best, over the slice's cuts; ECE = expected calibration error of choral's confidence against "
             "exact correctness, sum over 10 equal-width bins of (bin cuts / cuts) x |accuracy - mean "
             "confidence|.", ""]
    for split in SPLITS:
        lines.extend(_markdown_split(report, split))
    return "\n".join(lines)


def _chart_groups(report: EvalReport) -> tuple[list[str], list[Tally], str]:
    """Bars of the chart: overall plus the largest values of the first ``--by`` field (unannotated split)."""
    data = report.splits["unannotated"]
    labels, tallies, note = ["overall"], [data.overall], ""
    if report.by:
        groups = data.groups(report.by[0])
        if len(groups) > MAX_CHART_GROUPS:
            note = f" ({MAX_CHART_GROUPS} largest of {len(groups)} values)"
            largest = sorted(groups, key=lambda item: -item[1].n_words)[:MAX_CHART_GROUPS]
            groups = sorted(largest)
        labels += [value for value, _ in groups]
        tallies += [tally for _, tally in groups]
    return labels, tallies, note


def render_chart(report: EvalReport) -> bytes:
    """``report.png``: teacher vs choral WER on unannotated cuts, overall and per first ``--by`` value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels, tallies, note = _chart_groups(report)
    figure = Figure(figsize=(min(max(6.0, 0.8 * len(labels) + 2.0), 30.0), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = range(len(labels))
    width = 0.38
    for offset, system, color in ((-width / 2, "teacher", "#9e9e9e"), (width / 2, "choral", "#1f77b4")):
        heights = [100 * tally.wer(system) for tally in tallies]
        bars = axes.bar([p + offset for p in positions], heights, width, label=system, color=color)
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    crowded = len(labels) > 6
    axes.set_xticks(list(positions), labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.set_xlabel(report.by[0] if report.by else "all unannotated cuts")
    axes.set_ylabel("WER (%)")
    axes.set_title(f"Teacher vs choral WER on unannotated cuts{note}")
    axes.legend()
    axes.margins(y=0.15)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_report(report: EvalReport, out_dir: str | Path) -> ReportPaths:
    """Write ``report.json``, ``report.md`` and ``report.png`` into ``out_dir``, each atomically.

    All three are rendered in memory first, so a rendering failure writes nothing.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ChoralError(f"{out_dir}: exists and is not a folder")
    markdown, chart = render_markdown(report), render_chart(report)
    paths = report_paths(out_dir)
    try:
        write_json(report.to_dict(), paths.json)
        with atomic_output(paths.markdown) as tmp:
            tmp.write_text(markdown, encoding="utf-8")
        with atomic_output(paths.chart) as tmp:
            tmp.write_bytes(chart)
    except OSError as error:
        raise ChoralError(f"{out_dir}: cannot write the report ({error.strerror or error})") from None
    return paths
