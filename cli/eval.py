"""``choral eval``: WER of the teacher 1-best, the choral labels and the n-best oracle."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from ..pipeline.evaluate import SPLITS, evaluate_manifest
from ..pipeline.text import TextNormalizer
from .common import DEFAULT_DIGITS, Digits, console, print_skipped, progress_bar, stage_errors
from .report import outcome_table, reliability_table, wer_table


def eval_command(
    rescored: Path = typer.Argument(..., help="Rescored manifest from `choral propagate` (cuts with custom.nbest "
                                              "and custom.choral), e.g. RUN/rescored.jsonl.gz."),
    references: Path = typer.Option(..., "--references", "-r",
                                    help="True transcripts of the cuts: a Kaldi text file, a lhotse supervision "
                                         "manifest (id = cut id) or a lhotse cut manifest whose supervisions "
                                         "carry text."),
    by: List[str] = typer.Option([], "--by",
                                 help="Also break WER down by this field; repeat for several (--by accent --by "
                                      "speaker). Looked up in the cut's custom, then the supervision's speaker/"
                                      "language/gender and custom, then the reference's custom."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.json, report.md and report.png."),
    digits: Digits = typer.Option(DEFAULT_DIGITS,
                                  help="Digits policy of the text normaliser (use the one the other stages used)."),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="Skip (and count) cuts with no reference instead of failing."),
    force: bool = typer.Option(False, "--force", help="Redo even if the report is up to date."),
) -> None:
    """Score teacher 1-best, choral labels and the n-best oracle against true transcripts (corpus-level WER).

    Unannotated cuts (the headline: labels choral had to infer) and annotated cuts are reported apart.

    Each split gets an overall WER and one per value of every --by field (e.g. accent, speaker).

    Oracle: per cut, the n-best entry with the fewest word errors, the floor for any n-best rescoring.

    Help / harm rate: cuts whose choral label has fewer / more word errors than the teacher's 1-best.

    ECE: expected calibration error of choral's confidence against exact correctness (10 bins); the
    reliability table of the unannotated cuts is printed and written to report.md.

    Text is normalised as in every other stage (lower case, no punctuation, --digits policy).

    Writes OUT/report.json, OUT/report.md and OUT/report.png (teacher vs choral per first --by value).
    """
    with stage_errors("eval"):
        normalizer = TextNormalizer(digits=digits.value)
        with progress_bar() as progress:
            summary = evaluate_manifest(rescored, references, out, by, normalizer, allow_missing, force=force,
                                        progress=progress)
    if summary.skipped:
        print_skipped("eval", out)
        return
    for split in SPLITS:
        console.print(wer_table(summary.report, split, "eval"))
        console.print(outcome_table(summary.report, split, "eval"))
    reliability = reliability_table(summary.report, "unannotated", "eval")
    if reliability is not None:
        console.print(reliability)
    if summary.n_missing_references:
        console.print(f"skipped {summary.n_missing_references:,} cuts without a reference (--allow-missing)")
    paths = summary.paths
    console.print(f"wrote {paths.json}, {paths.markdown}, {paths.chart}")
