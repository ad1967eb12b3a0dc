"""Measuring every cut against its nearest annotated cuts: pairs grouped by annotated cut against pairs in cut order.

``choral graph`` measures each cut against its ``annotated_nearest`` annotated cuts most similar by pooled embedding
(:mod:`choral.pipeline.graph.annotated`). Those pairs cross the whole pool; the DTW frame kernel computes one Gram
matrix per tile of consecutive sequences, so the order the pairs reach it decides how much of each tile is used:

* ``stars`` (what the graph stage does): one call per annotated cut, it against every cut that chose it;
* ``cut order`` (the named peer): every pair in one call, cut by cut, as the nearest search returns them.

Both run on the same pairs of an existing run directory's ``grouped.jsonl.gz`` with the graph's metric, one thread
(``OMP_NUM_THREADS`` and the kernel's threads pinned to 1). Prints the median seconds of ``--repeats`` runs (in
alternating order; the stars also pay for the nearest search), the speed
ratio, and the largest relative difference between the two sets of distances.

    .venv/bin/python benchmarks/annotated_pairs.py runs/accented --metric dtw-frames
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from choral.kernels.threads import set_budget  # noqa: E402
from choral.pipeline.graph import GraphConfig  # noqa: E402
from choral.pipeline.graph.annotated import nearest_annotated  # noqa: E402
from choral.pipeline.graph.metrics import get_metric  # noqa: E402
from choral.pipeline.graph.stage import _read_table, annotated_pairs, pair_distances, pooled_vectors  # noqa: E402
from choral.pipeline.progress import NullProgress  # noqa: E402
from choral.pipeline.text import TextNormalizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a choral run directory with grouped.jsonl.gz")
    parser.add_argument("--metric", default="dtw-frames")
    parser.add_argument("--k", type=int, default=GraphConfig.annotated_nearest, help="annotated cuts per cut")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_budget(1)
    grouped = args.run_dir / "grouped.jsonl.gz"
    config = replace(GraphConfig(), metric=args.metric, annotated_nearest=args.k)
    metric = get_metric(config.metric)
    table = _read_table(grouped, metric, TextNormalizer(), NullProgress(), pooled=True)
    annotated = np.asarray([r is not None for r in table.references])
    a, b = nearest_annotated(pooled_vectors(table, metric), annotated, config.annotated_nearest)
    print(f"{len(table.ids):,} cuts, {int(annotated.sum()):,} annotated, {len(a):,} pairs "
          f"({config.metric}, k {args.k})")
    times: dict[str, list[float]] = {"stars": [], "cut order": []}
    out: dict[str, np.ndarray] = {}
    for repeat in range(args.repeats):
        for name in (("stars", "cut order") if repeat % 2 == 0 else ("cut order", "stars")):
            started = time.perf_counter()
            if name == "stars":
                _, _, out[name] = annotated_pairs(table, config, None)
            else:
                out[name] = pair_distances(table, a, b, config)
            times[name].append(time.perf_counter() - started)
    stars, peer = statistics.median(times["stars"]), statistics.median(times["cut order"])
    print(f"stars (choral graph)   {stars:8.2f} s  (median of {args.repeats})")
    print(f"cut order (peer)       {peer:8.2f} s")
    print(f"speed-up               {peer / stars:8.2f}x")
    diff = np.abs(out["stars"] - out["cut order"])
    relative = diff / np.maximum(np.abs(out["cut order"]), 1e-12)
    worst = int(np.argmax(relative))
    print(f"distances: largest absolute difference {diff.max():.2e}; largest relative {relative[worst]:.2e} "
          f"(at a distance of {out['cut order'][worst]:.4g}; median distance {np.median(out['cut order']):.4g})")


if __name__ == "__main__":
    main()
