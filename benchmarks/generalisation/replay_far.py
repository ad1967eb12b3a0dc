"""Replay retrieval's far path offline on development draws: helped / harmed cuts and word errors saved per setting.

The rows are the cuts a pool's run left on their teacher 1-best, with their nearest measured annotated reading (the
graph's ``annotated_*`` pairs over the learned threshold) and the nearest reading of another text. Run it on runs made
with the far path off (``propagate.retrieve_far_reach: 0``), development draws only:

    .venv/bin/python benchmarks/generalisation/replay_far.py benchmarks/generalisation/data/draw3[5-9] \\
        benchmarks/generalisation/data/draw40

For each fluency bar, reach and ratio it prints (cuts changed, helped, harmed, word errors saved), for every reading
and for readings with at least one word no n-best of the pool says (the far path's word test).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from replay_common import dev_rows, read_jsonl, read_references

from choral.pipeline.graph import CutGraph
from choral.pipeline.text import TextNormalizer
from choral.pipeline.wer import word_errors

FLUENCY: tuple[float, ...] = (0.35, 0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5)
REACH: tuple[float, ...] = (1.75, 2.0, 2.25, 2.5, 3.0)
RATIO: tuple[float, ...] = (0.85, 0.9, 0.95, 1.0)
# the default is the setting that saves the most word errors with no harmed cut (with the word test)



def pool_rows(data: Path, run: Path, normalize: TextNormalizer) -> list[dict]:
    """One row per unannotated cut still on its 1-best whose nearest annotated reading reads another text."""
    references = read_references(data, normalize)
    cuts = read_jsonl(run / "rescored.jsonl.gz")
    graph = CutGraph.load(run / "graph.npz")
    threshold = json.loads((run / "threshold.json").read_text())["threshold"]
    ids = [str(c) for c in graph.cut_ids]
    readings = defaultdict(list)
    for a, b, d in zip(graph.annotated_a, graph.annotated_b, graph.annotated_distances):
        readings[int(a)].append((float(d) / threshold, references[ids[int(b)]]))
    heard = {w for c in cuts for h in c["custom"].get("nbest", []) for w in normalize(h["text"]).split()}
    index = {c: i for i, c in enumerate(ids)}
    rows = []
    for cut in cuts:
        custom = cut["custom"]
        label = custom["choral"][0]
        if custom.get("annotated") or label["text"] != label["teacher_text"] or not readings[index[cut["id"]]]:
            continue
        near = sorted(readings[index[cut["id"]]])
        first, reading = near[0]
        second = next((d for d, text in near if text != reading), np.inf)
        best, reference = normalize(label["text"]), references[cut["id"]]
        if reading == best:
            continue
        top = custom["nbest"][0]
        rows.append({"fluency": top["score"] / max(len(top["text"].split()), 1), "first": first,
                     "ratio": first / second, "unheard": any(w not in heard for w in reading.split()),
                     "before": word_errors(reference, best), "after": word_errors(reference, reading),
                     "right": reading == reference})
    return rows


def replay(rows: list[dict], fluency: float, reach: float, ratio: float, word_test: bool) -> tuple[int, int, int, int]:
    chosen = [r for r in rows if r["fluency"] < -fluency and r["first"] <= reach and r["ratio"] <= ratio
              and (r["unheard"] or not word_test)]
    return (len(chosen), sum(r["after"] < r["before"] for r in chosen), sum(r["after"] > r["before"] for r in chosen),
            sum(r["before"] - r["after"] for r in chosen))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("draws", nargs="+", type=Path, help="development draws' data folders (run_protocol --data)")
    args = parser.parse_args(argv)
    rows = dev_rows(parser, args.draws, pool_rows)
    print(f"{len(rows)} cuts on their 1-best with a nearest annotated reading of another text")
    for fluency in FLUENCY:
        for reach in REACH:
            for ratio in RATIO:
                print(f"fluency {fluency:g} reach {reach:g} ratio {ratio:g}: every reading "
                      f"{replay(rows, fluency, reach, ratio, False)}, with an unheard word "
                      f"{replay(rows, fluency, reach, ratio, True)}")
    right = [r for r in rows if r["fluency"] < -1.0 and r["first"] <= 2.5 and r["ratio"] <= 0.9 and r["unheard"]]
    print(f"the default (1.0, 2.5, 0.9, word test): {sum(r['right'] for r in right)} of {len(right)} exactly right")


if __name__ == "__main__":
    main()
