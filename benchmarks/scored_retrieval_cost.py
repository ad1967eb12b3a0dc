"""What retrieval's scored path costs: propagate with it (the default) against without it, same run directory.

The scored path (``propagate.retrieve_scored_*``, issue 12 session 12) asks the teacher to score two texts for every
cut still on its 1-best whose nearest annotated reading is another text within the reach and that no neighbour
confirms. This runs ``propagate`` on an existing ``choral run`` directory (its ``grouped.jsonl.gz``, ``graph.npz``
and tuned ``params.yaml``) in two variants, each with its own teacher scorer and no score memo (so neither profits
from the other's scores):

* ``scored``: the run's parameters (the scored path on);
* ``off`` (the named peer): the same with ``retrieve_scored_reach: 0``, the pipeline as it was before the path.

Prints each run's seconds and texts scored, the median over ``--repeats`` runs in alternating order, the time ratio,
unannotated WER per ``--by`` value and how many transcripts differ.

    .venv/bin/python benchmarks/scored_retrieval_cost.py runs/accented \\
        --references benchmarks/accented/data/pool_references.jsonl.gz
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from borrow_cap import run

from choral.pipeline.evaluate import evaluate
from choral.pipeline.manifest import iter_cuts
from choral.pipeline.propagate import PropagateConfig, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a `choral run` directory (grouped, graph, params.yaml)")
    parser.add_argument("--references", type=Path, required=True)
    parser.add_argument("--teacher", default="default")
    parser.add_argument("--by", default="accent")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (pinned: the machine is shared)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    params = args.run_dir / "params.yaml"
    base = load_params(params) if params.exists() else PropagateConfig()
    variants = {"scored": base, "off": replace(base, retrieve_scored_reach=0.0)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    scored_texts: dict[str, int] = {}
    outs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name in (list(variants) if repeat % 2 == 0 else list(reversed(variants))):
                outs[name] = Path(tmp) / f"{name}.jsonl.gz"
                elapsed, texts = run(args.run_dir, variants[name], args.teacher, outs[name], memo=False)
                seconds[name].append(elapsed)
                scored_texts[name] = texts
                print(f"{name:7s} run {repeat + 1}: {elapsed:6.1f} s, {texts:,} texts scored", flush=True)
        reports = {name: evaluate(outs[name], args.references, (args.by,)).splits["unannotated"] for name in variants}
        chosen = {name: {c.id: c.custom["choral"][0]["text"] for c in iter_cuts(outs[name])} for name in variants}

    mine, peer = reports["scored"], reports["off"]
    print(f"\n{'slice':24s} {'teacher':>8s} {'scored':>8s} {'off':>8s}")
    rows = [("overall", mine.overall, peer.overall)]
    rows += [(f"{args.by} = {value}", tally, dict(peer.groups(args.by))[value])
             for value, tally in mine.groups(args.by)]
    for label, ours, theirs in rows:
        print(f"{label:24s} {100 * ours.wer('teacher'):7.2f}% {100 * ours.wer('choral'):7.2f}% "
              f"{100 * theirs.wer('choral'):7.2f}%")
    fast, slow = statistics.median(seconds["off"]), statistics.median(seconds["scored"])
    differ = sum(1 for cut_id, text in chosen["scored"].items() if chosen["off"].get(cut_id) != text)
    print(f"\nscored takes {slow / fast:.2f}x the time of off (median {slow:.1f} s vs {fast:.1f} s over "
          f"{args.repeats} runs each), scores {scored_texts['scored'] - scored_texts['off']:,} more texts "
          f"({scored_texts['scored']:,} vs {scored_texts['off']:,}); {differ} of {len(chosen['scored'])} "
          f"transcripts differ")


if __name__ == "__main__":
    main()
