"""``choral eval``: word error rates of the teacher, of choral and of the n-best oracle.

Reads a rescored manifest (cuts with ``custom.nbest`` and ``custom.choral``) and a
separate file of true transcripts (:mod:`..references`), and reports WER separately
for unannotated cuts (the headline: labels choral had to infer) and annotated cuts,
overall and per value of any ``--by`` field.

- :mod:`.stage`: :func:`evaluate` (scoring) and :func:`evaluate_manifest` (the stage: skip, force, sidecar);
- :mod:`.tally`: per-cut scores, per-slice tallies, the report and its table rows;
- :mod:`.calibration`: the reliability table and expected calibration error of choral's confidence;
- :mod:`.report`: ``report.json``, ``report.md`` and ``report.png``.
"""

from .calibration import N_BINS, Calibration, confidence_bin
from .report import (
                     ReportPaths,
                     optional_number,
                     optional_percent,
                     percent,
                     reliability_lines,
                     render_chart,
                     render_markdown,
                     write_report,
)
from .stage import EvalSummary, evaluate, evaluate_manifest, score_cut
from .tally import SPLITS, SYSTEMS, CutScore, EvalReport, ReportRow, SplitReport, Tally, report_rows

__all__ = ["N_BINS", "SPLITS", "SYSTEMS", "Calibration", "CutScore", "EvalReport", "EvalSummary", "ReportPaths",
           "ReportRow", "SplitReport", "Tally", "confidence_bin", "evaluate", "evaluate_manifest", "optional_number",
           "optional_percent", "percent", "reliability_lines", "render_chart", "render_markdown", "report_rows",
           "score_cut", "write_report"]
