"""Replay decision and retrieval with propagate settings changed: what each setting's retrieval labels would have
been on development draws (changed, helped, harmed, word errors saved).

Each pool is replayed by ``harm_census`` (decision and retrieval in-process, with the run's recorded parameters and
its teacher scorer) once per setting, and the labels retrieval's paths gave are counted against the references.
A setting is one or more ``key=value`` joined by ``,``; ``-`` is the run's own parameters. Development draws only
(the reported draws are refused). Session 14's two replays:

    .venv/bin/python benchmarks/generalisation/replay_settings.py benchmarks/generalisation/data/draw4[1-8] \\
        --settings - retrieve_hub_scale=10 retrieve_hub_scale=20 retrieve_hub_scale=60
    .venv/bin/python benchmarks/generalisation/replay_settings.py benchmarks/generalisation/data/draw4[1-8] \\
        --settings - retrieve_unsure_hub=4,retrieve_far_hub=4
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from harm_census import parse_override, pool_rows
from replay_common import dev_rows


def retrieval_totals(rows: list[dict]) -> dict[str, int]:
    """Labels the retrieval paths changed, helped, harmed, and the word errors they saved."""
    mine = [r for r in rows if r["step"].startswith("retrieve/")]
    return {"changed": len(mine), "helped": sum(r["after"] < r["before"] for r in mine),
            "harmed": sum(r["after"] > r["before"] for r in mine),
            "saved": sum(r["before"] - r["after"] for r in mine)}


def parse_setting(text: str) -> dict:
    """``key=value[,key=value...]`` (or ``-``: no change) as PropagateConfig overrides."""
    return {} if text == "-" else dict(parse_override(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("draws", nargs="+", type=Path, help="development draws' data folders (run_protocol --data)")
    parser.add_argument("--settings", nargs="+", type=parse_setting, required=True, metavar="KEY=VALUE[,...]",
                        help="settings to replay (- : the runs' own)")
    args = parser.parse_args(argv)
    print("| setting | changed | helped | harmed | word errors saved |\n|---|---:|---:|---:|---:|")
    for overrides in args.settings:
        rows = dev_rows(parser, args.draws, partial(pool_rows, overrides=overrides))
        t = retrieval_totals(rows)
        name = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "as run"
        print(f"| {name} | {t['changed']} | {t['helped']} | {t['harmed']} | {t['saved']} |", flush=True)


if __name__ == "__main__":
    main()
