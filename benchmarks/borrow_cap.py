"""Propagate with the cap on borrowed candidates (``max_borrowed``) against no cap, same run.

Runs ``propagate`` twice on an existing ``choral run`` directory (its
``grouped.jsonl.gz``, ``graph.npz`` and tuned ``params.yaml``) with a fresh
teacher scorer each time, so neither run profits from the other's memo:

* ``capped``: ``max_borrowed`` as given (default: the library default);
* ``no cap`` (the named peer): ``max_borrowed 0``, every label with support
  >= ``share_min`` is scored, as choral did before the cap.

Prints seconds (the fastest of ``--repeats`` runs, in alternating order, so the
first run's cold file cache does not fall on one side), borrowed texts scored,
unannotated WER per ``--by`` value for both, the speed ratio, and how many cuts'
transcripts differ.

    .venv/bin/python benchmarks/borrow_cap.py runs/accented \\
        --references benchmarks/accented/data/pool_references.jsonl.gz --teacher default
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from choral.pipeline.evaluate import evaluate
from choral.pipeline.manifest import iter_cuts
from choral.pipeline.propagate import PropagateConfig, load_params, propagate_manifest
from choral.pipeline.teacher import teacher_scorer


def counting(scorer):
    """``scorer`` that also counts the texts it was asked to score."""
    count = {"texts": 0}

    def score(cut_id: str, texts):
        count["texts"] += len(texts)
        return scorer(cut_id, texts)

    return score, count


def run(run_dir: Path, config: PropagateConfig, teacher: str, out: Path, memo: bool = True) -> tuple[float, int]:
    """Seconds of one propagate with a fresh scorer (``memo``: also the run's score memo), and the texts it scored."""
    scorer, count = counting(teacher_scorer(run_dir / "grouped.jsonl.gz", teacher, memo=memo))
    started = time.perf_counter()
    propagate_manifest(run_dir / "grouped.jsonl.gz", run_dir / "graph.npz", out, config, scorer=scorer, force=True)
    return time.perf_counter() - started, count["texts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a `choral run` directory (grouped, graph, params.yaml)")
    parser.add_argument("--references", type=Path, required=True)
    parser.add_argument("--teacher", default="default")
    parser.add_argument("--by", default="accent")
    parser.add_argument("--max-borrowed", type=int, default=PropagateConfig().max_borrowed)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    params = args.run_dir / "params.yaml"
    base = load_params(params) if params.exists() else PropagateConfig()
    variants = {"capped": replace(base, max_borrowed=args.max_borrowed), "no cap": replace(base, max_borrowed=0)}
    results = {}
    timings: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name in (list(variants) if repeat % 2 == 0 else list(reversed(variants))):
                config = variants[name]
                out = Path(tmp) / f"{name.replace(' ', '-')}.jsonl.gz"
                seconds, texts = run(args.run_dir, config, args.teacher, out)
                timings[name].append(seconds)
                report = evaluate(out, args.references, (args.by,)).splits["unannotated"]
                chosen = {c.id: c.custom["choral"][0]["text"] for c in iter_cuts(out)}
                results[name] = (min(timings[name]), texts, report, chosen)
                print(f"{name:8s} max_borrowed {config.max_borrowed:3d}: {seconds:7.1f} s, "
                      f"{texts:,} borrowed texts scored, unannotated WER {100 * report.overall.wer('choral'):.2f}%",
                      flush=True)

    capped, peer = results["capped"], results["no cap"]
    print(f"\n{'slice':24s} {'teacher':>8s} {'capped':>8s} {'no cap':>8s}")
    rows = [("overall", capped[2].overall, peer[2].overall)]
    rows += [(f"{args.by} = {value}", tally, dict(peer[2].groups(args.by))[value])
             for value, tally in capped[2].groups(args.by)]
    for label, mine, theirs in rows:
        print(f"{label:24s} {100 * mine.wer('teacher'):7.2f}% {100 * mine.wer('choral'):7.2f}% "
              f"{100 * theirs.wer('choral'):7.2f}%")
    differ = sum(1 for cut_id, text in capped[3].items() if peer[3].get(cut_id) != text)
    print(f"\ncapped is {peer[0] / capped[0]:.2f}x faster than no cap ({capped[0]:.1f} s vs {peer[0]:.1f} s), "
          f"scores {capped[1] / max(peer[1], 1):.2f}x the texts; {differ} of {len(capped[3])} transcripts differ "
          f"(fastest of {args.repeats} runs each)")


if __name__ == "__main__":
    main()
