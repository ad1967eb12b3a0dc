"""Replay retrieval's scored path offline on development draws: helped / harmed cuts and word errors saved per bound.

The rows are the cuts a pool's run left on their teacher 1-best whose nearest measured annotated reading (the graph's
``annotated_*`` pairs over the learned threshold) reads another text. The default teacher scores that reading and the
1-best against the cut's audio (the run's score memo is reused). Run it on runs made with the scored path off
(``propagate.retrieve_scored_reach: 0``), development draws only:

    .venv/bin/python benchmarks/generalisation/replay_scored.py benchmarks/generalisation/data/draw4[1-6]

For each margin it prints (cuts changed, helped, harmed, word errors saved), in total nats and in nats per word of the
reading, with and without asking the teacher to rank the reading above every other measured annotated text, and
then with the agreement test (``retrieve_scored_alone``: no neighbour in the graph labelled with the cut's 1-best).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from replay_common import dev_rows, read_jsonl, read_references

from choral.pipeline.graph import CutGraph
from choral.pipeline.teacher.registry import teacher_scorer
from choral.pipeline.text import TextNormalizer
from choral.pipeline.wer import word_errors

TOTAL: tuple[float, ...] = (4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)       # nats below the 1-best
PER_WORD: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)       # nats per word of the reading
REACH: float = 2.5



def pool_rows(data: Path, run: Path, normalize: TextNormalizer) -> list[dict]:
    """One row per unannotated cut still on its 1-best whose nearest annotated reading (within the reach) reads
    another text: the teacher's scores of that reading, of the 1-best and of the best other measured text."""
    references = read_references(data, normalize)
    cuts = read_jsonl(run / "rescored.jsonl.gz")
    graph = CutGraph.load(run / "graph.npz")
    threshold = json.loads((run / "threshold.json").read_text())["threshold"]
    ids = [str(c) for c in graph.cut_ids]
    readings: dict[int, dict[str, float]] = defaultdict(dict)
    for a, b, d in zip(graph.annotated_a, graph.annotated_b, graph.annotated_distances):
        text, distance = references[ids[int(b)]], float(d) / threshold
        readings[int(a)][text] = min(readings[int(a)].get(text, np.inf), distance)
    index = {c: i for i, c in enumerate(ids)}
    labels = [""] * len(ids)
    for cut in cuts:
        labels[index[cut["id"]]] = normalize(cut["custom"]["choral"][0]["text"])
    adjacency = graph.adjacency()
    scorer = teacher_scorer(run / "grouped.jsonl.gz", "default")
    rows = []
    for cut in cuts:
        custom = cut["custom"]
        label = custom["choral"][0]
        near = readings[index[cut["id"]]]
        if custom.get("annotated") or label["text"] != label["teacher_text"] or not near or not custom["nbest"]:
            continue
        texts = sorted(near, key=near.__getitem__)
        reading, best = texts[0], normalize(custom["nbest"][0]["text"])
        if reading == best or near[reading] > REACH:
            continue
        scores = np.asarray(scorer(cut["id"], [*texts, best]), dtype=np.float64)
        reference = references[cut["id"]]
        row = index[cut["id"]]
        neighbours = adjacency.indices[adjacency.indptr[row]:adjacency.indptr[row + 1]]
        rows.append({"alone": not any(labels[j] == best for j in neighbours.tolist()),
                     "margin": scores[0] - scores[-1], "words": max(len(reading.split()), 1),
                     "first": bool(len(texts) == 1 or scores[0] >= scores[1:-1].max()),
                     "before": word_errors(reference, best), "after": word_errors(reference, reading),
                     "right": reading == reference, "pool": data.name})
    return rows


def replay(rows: list[dict], bound: float, per_word: bool, ranked: bool,
           alone: bool = False) -> tuple[int, int, int, int]:
    chosen = [r for r in rows if (r["margin"] / r["words"] if per_word else r["margin"]) >= -bound
              and (r["first"] or not ranked) and (r["alone"] or not alone)]
    return (len(chosen), sum(r["after"] < r["before"] for r in chosen), sum(r["after"] > r["before"] for r in chosen),
            sum(r["before"] - r["after"] for r in chosen))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("draws", nargs="+", type=Path, help="development draws' data folders (run_protocol --data)")
    args = parser.parse_args(argv)
    rows = dev_rows(parser, args.draws, pool_rows)
    print(f"{len(rows)} cuts on their 1-best with a nearest annotated reading of another text within {REACH:g}")
    for per_word, bounds in ((False, TOTAL), (True, PER_WORD)):
        for bound in bounds:
            unit = "nats per word" if per_word else "nats"
            print(f"margin {bound:g} {unit}: {replay(rows, bound, per_word, False)}, "
                  f"ranked first {replay(rows, bound, per_word, True)}")
    for bound in TOTAL:
        print(f"margin {bound:g} nats, no neighbour labelled with the 1-best: "
              f"{replay(rows, bound, False, False, True)}")
    taken = [r for r in rows if r["margin"] >= -8.0 and r["alone"]]
    print(f"the default (8 nats, alone): {sum(r['right'] for r in taken)} of {len(taken)} exactly right, "
          f"{sum(r['pool'] == 'generator' for r in taken)} in generator pools")


if __name__ == "__main__":
    main()
