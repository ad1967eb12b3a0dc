"""The tables of ``choral eval`` and ``choral run``, fed by ``report.json``'s content: WER with help / harm
rates and ECE per slice, and the reliability table of choral's confidence."""

from __future__ import annotations

from typing import Mapping

from rich import box
from rich.table import Table

from ..pipeline.evaluate import optional_number, optional_percent, percent, report_rows
from .common import plain_output

SPLIT_TITLES = {"unannotated": "unannotated cuts (headline)", "annotated": "annotated cuts"}


def wer_table(report: Mapping, split: str, command: str) -> Table:
    """The rich table of one split: rows = overall and each --by value, WER in percent, label sources below."""
    data = report[split]
    table = Table(title=f"choral {command}, WER: {SPLIT_TITLES[split]}", title_justify="left",
                  box=None if plain_output() else box.SIMPLE_HEAD, caption_justify="left",
                  caption="choral label source: " + ", ".join(f"{k} {v:,}" for k, v in data["sources"].items()))
    table.add_column("slice", style="bold", overflow="fold")
    for name in ("cuts", "words", "teacher", "choral", "oracle", "reduction"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in report_rows(data):
        table.add_row(row.label, f"{row.n_cuts:,}", f"{row.n_words:,}", percent(row.wer["teacher"]),
                      percent(row.wer["choral"]), percent(row.wer["oracle"]), percent(row.relative_wer_reduction))
    return table


def outcome_table(report: Mapping, split: str, command: str) -> Table:
    """Beside the WER table (kept apart so both fit 80 columns): per slice the help and harm rates (cuts
    whose choral label has fewer / more word errors than the teacher's 1-best) and the ECE of the confidence."""
    table = Table(title=f"choral {command}, help / harm / calibration: {SPLIT_TITLES[split]}", title_justify="left",
                  box=None if plain_output() else box.SIMPLE_HEAD)
    table.add_column("slice", style="bold", overflow="fold")
    for name in ("cuts", "help rate", "harm rate", "ECE"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in report_rows(report[split]):
        table.add_row(row.label, f"{row.n_cuts:,}", optional_percent(row.help_rate), optional_percent(row.harm_rate),
                      optional_number(row.ece))
    return table


def reliability_table(report: Mapping, split: str, command: str) -> Table | None:
    """The reliability table of one split's overall calibration (None when no cut had a confidence)."""
    calibration = report[split].get("calibration")
    if not calibration or not calibration["n"]:
        return None
    table = Table(title=f"choral {command}, calibration of the confidence: {SPLIT_TITLES[split]}",
                  title_justify="left", box=None if plain_output() else box.SIMPLE_HEAD, caption_justify="left",
                  caption=f"ECE {optional_number(calibration['ece'])} over {calibration['n']:,} cuts "
                          "(correct = label equals the reference after normalisation)")
    for name in ("confidence", "cuts", "mean confidence", "accuracy"):
        table.add_column(name, justify="right", no_wrap=True)
    for b in calibration["bins"]:
        table.add_row(f"{b['lower']:.1f}-{b['upper']:.1f}", f"{b['n']:,}", optional_number(b["confidence"]),
                      optional_number(b["accuracy"]))
    return table
