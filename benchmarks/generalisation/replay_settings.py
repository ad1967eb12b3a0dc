"""Replay decision and retrieval with propagate settings changed: what each setting's labels would have been on
development draws (changed, helped, harmed, word errors saved), retrieval's alone or (``--steps all``) every step's.

Each pool is replayed by ``harm_census`` (decision and retrieval in-process, with the run's recorded parameters and
its teacher scorer) once per setting, and the labels retrieval's paths gave are counted against the references.
A setting is one or more ``key=value`` joined by ``,``; ``-`` is the run's own parameters. Development draws only
(the reported draws are refused). Session 14's two replays:

    .venv/bin/python benchmarks/generalisation/replay_settings.py benchmarks/generalisation/data/draw4[1-8] \\
        --settings - retrieve_hub_scale=10 retrieve_hub_scale=20 retrieve_hub_scale=60
    .venv/bin/python benchmarks/generalisation/replay_settings.py benchmarks/generalisation/data/draw4[1-8] \\
        --settings - retrieve_unsure_hub=4,retrieve_far_hub=4

Session 15's grid (every step; ``--base`` is applied under every setting; ``cells`` counts draw x condition cells,
90 unannotated cuts each, with two or more harmed labels, i.e. over the protocol's 2% bound):

    .venv/bin/python benchmarks/generalisation/replay_settings.py benchmarks/generalisation/data/draw{41..66} \\
        --steps all --base retrieve_unsure_hub=4,retrieve_far_hub=4 \\
        --settings - retrieve_ratio=0.6,error_margin=0.5,correction_edits=0
"""

from __future__ import annotations

import argparse
from collections import Counter
from functools import partial
from pathlib import Path

from harm_census import parse_override, pool_rows
from replay_common import dev_rows


def retrieval_totals(rows: list[dict], prefix: str = "retrieve/") -> dict[str, int]:
    """Labels the steps named ``prefix...`` (retrieval's paths; ``""``: every step) changed, helped, harmed, the
    word errors they saved, and the draw x condition cells where they harmed two labels or more."""
    mine = [r for r in rows if r["step"].startswith(prefix)]
    harmed = Counter((Path(r["pool"]).parent.name, r["condition"]) for r in mine if r["after"] > r["before"])
    return {"changed": len(mine), "helped": sum(r["after"] < r["before"] for r in mine),
            "harmed": sum(harmed.values()), "saved": sum(r["before"] - r["after"] for r in mine),
            "cells": sum(n >= 2 for n in harmed.values())}


def parse_setting(text: str) -> dict:
    """``key=value[,key=value...]`` (or ``-``: no change) as PropagateConfig overrides."""
    return {} if text == "-" else dict(parse_override(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("draws", nargs="+", type=Path, help="development draws' data folders (run_protocol --data)")
    parser.add_argument("--settings", nargs="+", type=parse_setting, required=True, metavar="KEY=VALUE[,...]",
                        help="settings to replay (- : the runs' own)")
    parser.add_argument("--base", type=parse_setting, default={}, metavar="KEY=VALUE[,...]",
                        help="overrides under every setting (e.g. today's defaults the runs were made without)")
    parser.add_argument("--steps", choices=("retrieval", "all"), default="retrieval",
                        help="count retrieval's labels (default) or every changed label, the decision's too")
    parser.add_argument("--snr-from-audio", action="store_true",
                        help="cuts decoded without custom.snr_db get it from the pool's audio (replays noisy_pair_snr)")
    args = parser.parse_args(argv)
    prefix = "retrieve/" if args.steps == "retrieval" else ""
    print("| setting | changed | helped | harmed | word errors saved | cells with >= 2 harmed |\n"
          "|---|---:|---:|---:|---:|---:|")
    for overrides in args.settings:
        rows = dev_rows(parser, args.draws, partial(pool_rows, overrides={**args.base, **overrides},
                                                            snr_from_audio=args.snr_from_audio))
        t = retrieval_totals(rows, prefix)
        name = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "as run"
        print(f"| {name} | {t['changed']} | {t['helped']} | {t['harmed']} | {t['saved']} | {t['cells']} |",
              flush=True)


if __name__ == "__main__":
    main()
