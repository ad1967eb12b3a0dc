"""A before / after table of ``choral eval`` reports on the same cuts (Markdown on stdout).

    .venv/bin/python benchmarks/generalisation/before_after.py BEFORE/eval/report.json [MIDDLE/...] \\
        AFTER/eval/report.json [--by accent] [--label generator]

Per value of ``--by`` (the condition) and overall, over unannotated cuts: teacher WER, then choral WER, help
rate, harm rate and ECE of each report in order (``a / b / c``; :mod:`gen_results` reads the reports).
Used for the "before and after" rows of this protocol's RESULTS.md and of ``benchmarks/accented/RESULTS.md``:
"before" is a run with the decisions switched off (``uncalibrated.yaml``, ``configs/accented-uncalibrated.yaml``),
a middle one the exact-correctness decision (``exact.yaml``), "after" one with today's defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_results import Slice, condition_slices, num, overall_slice, pct  # noqa: E402


def rows(reports: list[dict], by: str, label: str | None) -> list[str]:
    """The table's rows: one per condition every report has, then the overall row."""
    per_report = [condition_slices(r, by) for r in reports]
    out = []

    def row(name: str, slices: list[Slice]) -> str:
        last = slices[-1]
        for s in slices:
            if s.n_cuts != last.n_cuts or s.errors["teacher"] != last.errors["teacher"]:
                raise SystemExit(f"{name}: the reports are not over the same cuts")
        prefix = f"{label} | " if label else ""

        def joined(value) -> str:
            return " / ".join(value(s) for s in slices)

        return (f"| {prefix}{name} | {last.n_cuts} | {pct(last.wer('teacher'))} | "
                f"{joined(lambda s: pct(s.wer('choral')))} | {joined(lambda s: pct(s.help_rate))} | "
                f"{joined(lambda s: pct(s.harm_rate))} | {joined(lambda s: num(s.ece))} |")

    for name in sorted(set.intersection(*(set(s) for s in per_report))):
        out.append(row(name, [s[name] for s in per_report]))
    out.append(row("**overall**", [overall_slice(r) for r in reports]))
    return out


def header(label: bool, n: int) -> list[str]:
    prefix, align = ("pool | ", "---|") if label else ("", "")
    runs = "before / after" if n == 2 else " / ".join(f"run {k + 1}" for k in range(n))
    return [f"| {prefix}condition | cuts | teacher WER | choral WER {runs} | help rate | harm rate | ECE |",
            f"|{align}---|---:|---:|---:|---:|---:|---:|"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, nargs="+", help="report.json files, oldest decision first (>= 2)")
    parser.add_argument("--by", default="accent")
    parser.add_argument("--label", default=None, help="a first column (the pool's name)")
    parser.add_argument("--no-header", action="store_true")
    args = parser.parse_args(argv)
    if len(args.reports) < 2:
        parser.error("give at least two report.json files")
    reports = [json.loads(p.read_text()) for p in args.reports]
    lines = [] if args.no_header else header(args.label is not None, len(reports))
    lines += rows(reports, args.by, args.label)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
