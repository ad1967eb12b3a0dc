"""``choral eval``: WER of the teacher 1-best, the choral labels and the n-best oracle."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer
from rich import box
from rich.table import Table

from ..pipeline.evaluate import SPLITS, EvalReport, evaluate, percent, write_report
from ..pipeline.text import TextNormalizer
from .common import Digits, console, progress_bar, stage_errors

_SPLIT_TITLES = {"unannotated": "unannotated cuts (headline)", "annotated": "annotated cuts"}


def eval_command(
    rescored: Path = typer.Argument(..., help="Rescored manifest from `choral propagate` (cuts with custom.nbest "
                                              "and custom.choral), e.g. RUN/rescored.jsonl.gz."),
    references: Path = typer.Option(..., "--references", "-r",
                                    help="True transcripts of the cuts: a lhotse supervision manifest (id = cut id) "
                                         "or a lhotse cut manifest whose supervisions carry text."),
    by: List[str] = typer.Option([], "--by",
                                 help="Also break WER down by this field; repeat for several (--by accent --by "
                                      "speaker). Looked up in the cut's custom, then the supervision's speaker/"
                                      "language/gender and custom, then the reference's custom."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.json, report.md and report.png."),
    digits: Digits = typer.Option(Digits.spell,
                                  help="Digits policy of the text normaliser (use the one the other stages used)."),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="Skip (and count) cuts with no reference instead of failing."),
) -> None:
    """Score teacher 1-best, choral labels and the n-best oracle against true transcripts (corpus-level WER).

    Unannotated cuts (the headline: labels choral had to infer) and annotated cuts are reported apart.

    Each split gets an overall WER and one per value of every --by field (e.g. accent, speaker).

    Oracle: per cut, the n-best entry with the fewest word errors, the floor for any n-best rescoring.

    Text is normalised as in every other stage (lower case, no punctuation, --digits policy).

    Writes OUT/report.json, OUT/report.md and OUT/report.png (teacher vs choral per first --by value).
    """
    with stage_errors("eval"):
        normalizer = TextNormalizer(digits=digits.value)  # type: ignore[arg-type]
        with progress_bar() as progress:
            report = evaluate(rescored, references, by, normalizer, allow_missing, progress=progress)
        paths = write_report(report, out)
    for split in SPLITS:
        console.print(_wer_table(report, split))
    if report.n_missing_references:
        console.print(f"skipped {report.n_missing_references:,} cuts without a reference (--allow-missing)")
    console.print(f"wrote {paths.json}, {paths.markdown}, {paths.chart}")


def _wer_table(report: EvalReport, split: str) -> Table:
    """The rich table of one split: rows = overall and each --by value, WER in percent."""
    sources = report.splits[split].to_dict()["sources"]
    table = Table(title=f"choral eval, WER: {_SPLIT_TITLES[split]}", title_justify="left", box=box.SIMPLE_HEAD,
                  caption="choral label source: " + ", ".join(f"{k} {v:,}" for k, v in sources.items()),
                  caption_justify="left")
    table.add_column("slice", style="bold", overflow="fold")
    for name in ("cuts", "words", "teacher", "choral", "oracle", "reduction"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in report.rows(split):
        table.add_row(row.label, f"{row.n_cuts:,}", f"{row.n_words:,}", percent(row.wer["teacher"]),
                      percent(row.wer["choral"]), percent(row.wer["oracle"]), percent(row.relative_wer_reduction))
    return table
