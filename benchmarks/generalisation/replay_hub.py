"""Replay a hub bound on retrieval's labels offline: what each bound would have removed, per path, on development draws.

A hub is an annotated reading that is the nearest annotated reading of many more unannotated cuts than its share
(``retrieve.hub_ratios``: that count over ``n_unannotated / n_annotated``): a short template command among sentences
is near everything. Run it on runs made with the bound off (``propagate.retrieve_far_hub: 0``, the default before
session 12), development draws only:

    .venv/bin/python benchmarks/generalisation/replay_hub.py benchmarks/generalisation/data/draw4[1-9] \\
        benchmarks/generalisation/data/draw50

A retrieval path's labels are told apart by the confidence it writes (``propagate.retrieve_*_calibration`` in the
run's params.yaml, a constant per path). For each path and bound it prints the labels the bound would remove, how
many of them were harmed (more word errors than the 1-best) or exactly right, and the word errors saved they carry.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from replay_common import dev_rows, read_jsonl, read_references

from choral.pipeline.graph import CutGraph
from choral.pipeline.propagate import load_params
from choral.pipeline.propagate.retrieve import hub_ratios, nearest_readings
from choral.pipeline.text import TextNormalizer
from choral.pipeline.wer import word_errors

BOUNDS: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
PATHS: dict[str, str] = {"unsure": "retrieve_calibration", "unheard": "retrieve_unheard_calibration",
                         "far": "retrieve_far_calibration", "scored": "retrieve_scored_calibration"}



def pool_rows(data: Path, run: Path, normalize: TextNormalizer) -> list[dict]:
    """One row per unannotated cut a retrieval path relabelled: its path, its reading's hub ratio, the outcome."""
    references = read_references(data, normalize)
    cuts = read_jsonl(run / "rescored.jsonl.gz")
    graph = CutGraph.load(run / "graph.npz")
    params = load_params(run / "params.yaml")
    signature = {round(float(1 / (1 + np.exp(-getattr(params, key)[0]))), 4): path for path, key in PATHS.items()}
    index = {str(c): i for i, c in enumerate(graph.cut_ids)}
    annotated = [False] * graph.n_cuts
    for cut in cuts:
        annotated[index[cut["id"]]] = bool(cut["custom"].get("annotated"))
    normalised = [None] * graph.n_cuts
    for cut in cuts:
        if cut["custom"].get("annotated"):
            normalised[index[cut["id"]]] = references[cut["id"]]
    nearest, _, _ = nearest_readings(graph, normalised)
    hubs = hub_ratios(nearest, annotated)
    rows = []
    for cut in cuts:
        label = cut["custom"]["choral"][0]
        path = signature.get(round(float(label["confidence"]), 4))
        if cut["custom"].get("annotated") or path is None or label["text"] == label["teacher_text"]:
            continue
        source = int(nearest[index[cut["id"]]])
        text, best, reference = normalize(label["text"]), normalize(label["teacher_text"]), references[cut["id"]]
        if source < 0 or normalised[source] != text:
            continue
        before, after = word_errors(reference, best), word_errors(reference, text)
        rows.append({"path": path, "hub": float(hubs[source]), "harmed": after > before, "right": text == reference,
                     "saved": before - after})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("draws", nargs="+", type=Path, help="development draws' data folders (run_protocol --data)")
    args = parser.parse_args(argv)
    rows = dev_rows(parser, args.draws, pool_rows)
    for path in PATHS:
        mine = [r for r in rows if r["path"] == path]
        print(f"{path}: {len(mine)} labels, {sum(r['harmed'] for r in mine)} harmed, "
              f"{sum(r['right'] for r in mine)} exactly right, {sum(r['saved'] for r in mine)} word errors saved")
        for bound in BOUNDS:
            removed = [r for r in mine if r["hub"] > bound]
            print(f"  bound {bound:g}: removes {len(removed)} ({sum(r['harmed'] for r in removed)} harmed, "
                  f"{sum(r['right'] for r in removed)} right), "
                  f"{sum(r['saved'] for r in removed)} word errors saved lost")


if __name__ == "__main__":
    main()
