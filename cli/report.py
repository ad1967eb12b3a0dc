"""The WER table of ``choral eval`` and ``choral run``: one function, fed by ``report.json``'s content."""

from __future__ import annotations

from typing import Mapping

from rich import box
from rich.table import Table

from ..pipeline.evaluate import percent, report_rows
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
