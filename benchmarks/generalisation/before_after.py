"""A before / after table of two ``choral eval`` reports on the same cuts (Markdown on stdout).

    .venv/bin/python benchmarks/generalisation/before_after.py BEFORE/eval/report.json AFTER/eval/report.json \\
        [--by accent] [--label generator]

Per value of ``--by`` (the condition) and overall, over unannotated cuts: teacher WER, choral WER
before / after, help rate, harm rate and ECE before / after (:mod:`gen_results` reads the reports).
Used for the "before and after the calibrated decision" rows of this protocol's RESULTS.md and of
``benchmarks/accented/RESULTS.md``: "before" is a run with the decisions switched off
(``uncalibrated.yaml``, ``configs/accented-uncalibrated.yaml``), "after" one with today's defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_results import Slice, condition_slices, num, overall_slice, pct  # noqa: E402


def rows(before: dict, after: dict, by: str, label: str | None) -> list[str]:
    """The table's rows: one per condition the two reports share, then the overall row."""
    first, second = condition_slices(before, by), condition_slices(after, by)
    out = []

    def row(name: str, b: Slice, a: Slice) -> str:
        if b.n_cuts != a.n_cuts or b.errors["teacher"] != a.errors["teacher"]:
            raise SystemExit(f"{name}: the two reports are not over the same cuts")
        prefix = f"{label} | " if label else ""
        return (f"| {prefix}{name} | {a.n_cuts} | {pct(a.wer('teacher'))} | {pct(b.wer('choral'))} / "
                f"{pct(a.wer('choral'))} | {pct(b.help_rate)} / {pct(a.help_rate)} | {pct(b.harm_rate)} / "
                f"{pct(a.harm_rate)} | {num(b.ece)} / {num(a.ece)} |")

    for name in sorted(set(first) & set(second)):
        out.append(row(name, first[name], second[name]))
    out.append(row("**overall**", overall_slice(before), overall_slice(after)))
    return out


def header(label: bool) -> list[str]:
    prefix, align = ("pool | ", "---|") if label else ("", "")
    return [f"| {prefix}condition | cuts | teacher WER | choral WER before / after | help rate before / after | "
            "harm rate before / after | ECE before / after |",
            f"|{align}---|---:|---:|---:|---:|---:|---:|"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--by", default="accent")
    parser.add_argument("--label", default=None, help="a first column (the pool's name)")
    parser.add_argument("--no-header", action="store_true")
    args = parser.parse_args(argv)
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    lines = ([] if args.no_header else header(args.label is not None)) + rows(before, after, args.by, args.label)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
