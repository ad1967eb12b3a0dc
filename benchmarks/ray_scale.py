"""Local vs Ray on a 2-node Ray cluster on this machine (1 CPU each): group -> graph -> tune -> propagate of a
synthetic set, and decode of the demo set with 1 and 2 teacher actors.

    .venv/bin/python benchmarks/ray_scale.py [--cuts 100000] [--skip-decode]

Prints seconds per stage (local, Ray with 1 worker process, Ray with 2), the overhead ratio Ray(2)/local,
the throughput ratio of 2 workers over 1, decode RTF with 1 and 2 actors, checks that the Ray outputs are
byte-identical to the local ones (params.yaml but for its first line, which names the grouped manifest), and a
projection for 10,000 hours of audio. tune runs its default grid (above 6,000 cuts of annotated groups it samples
whole groups and searches coarse to fine, crossval.MAX_TUNE_CUTS).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from choral.pipeline.decode import DecodeConfig  # noqa: E402
from choral.pipeline.executor import ExecutorConfig  # noqa: E402
from choral.pipeline.executor.ray_backend import RayExecutor  # noqa: E402
from choral.pipeline.executor.ray_decode import decode_on_ray  # noqa: E402
from choral.pipeline.executor.rescoring import parallel_rescorer  # noqa: E402
from choral.pipeline.graph import GraphConfig, build_graph  # noqa: E402
from choral.pipeline.group import GroupingConfig, group_manifest  # noqa: E402
from choral.pipeline.propagate import PropagateConfig, load_params, propagate_manifest  # noqa: E402
from choral.pipeline.synthetic import SyntheticConfig, generate  # noqa: E402
from choral.pipeline.tune import tune_stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STORE = 100 * 1024 * 1024


def rescoring(decoded: Path, out: Path, executor: RayExecutor | None, batch_cuts: int) -> dict[str, float]:
    """Seconds of group, graph, tune and propagate (no scorer) of ``decoded`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    started = time.perf_counter()
    group_manifest(decoded, out / "grouped.jsonl.gz", GroupingConfig(), executor=executor, force=True)
    seconds["group"] = time.perf_counter() - started
    started = time.perf_counter()
    build_graph(out / "grouped.jsonl.gz", out / "graph.npz", None, GraphConfig(), executor=executor, force=True)
    seconds["graph"] = time.perf_counter() - started
    started = time.perf_counter()
    base = PropagateConfig(batch_cuts=batch_cuts)
    tune_stage(out / "grouped.jsonl.gz", out / "graph.npz", out / "params.yaml", base=base, executor=executor,
               force=True)
    seconds["tune"] = time.perf_counter() - started
    started = time.perf_counter()
    rescorer = {} if executor is None else {"rescorer": parallel_rescorer(executor)}
    propagate_manifest(out / "grouped.jsonl.gz", out / "graph.npz", out / "rescored.jsonl.gz",
                       load_params(out / "params.yaml", base=base), force=True, **rescorer)
    seconds["propagate"] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--cuts", type=int, default=100_000, help="approximate synthetic cuts")
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray_scale."))
    try:
        n_prompts = max(1, args.cuts // 8)  # 4 accents x 2 speakers per prompt
        corpus = generate(work / "synth", SyntheticConfig(n_prompts=n_prompts, seed=1))
        batch_cuts = max(1, corpus.n_cuts // 8)  # 8 batches of whole groups, the same for local and Ray
        print(f"synthetic set: {corpus.n_cuts:,} cuts; propagate.batch_cuts {batch_cuts:,}")
        local = rescoring(corpus.decoded, work / "local", None, batch_cuts)

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                                  "include_dashboard": False})
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}, log_to_driver=False)
        try:
            remote = {}
            for workers in (1, 2):
                executor = RayExecutor(ExecutorConfig(kind="ray", address=cluster.address, workers=workers))
                remote[workers] = rescoring(corpus.decoded, work / f"ray{workers}", executor, batch_cuts)
            same = all((work / "ray2" / name).read_bytes() == (work / "local" / name).read_bytes()
                       for name in ("grouped.jsonl.gz", "params.json", "rescored.jsonl.gz"))
            same = same and len({(work / side / "params.yaml").read_text().split("\n", 1)[1]
                                 for side in ("local", "ray1", "ray2")}) == 1
            print(f"\n{'stage':<10s} {'local s':>8s} {'ray 1w s':>9s} {'ray 2w s':>9s} {'ray2/local':>10s} "
                  f"{'2w/1w speed-up':>15s}")
            for stage in ("group", "graph", "tune", "propagate"):
                print(f"{stage:<10s} {local[stage]:8.2f} {remote[1][stage]:9.2f} {remote[2][stage]:9.2f} "
                      f"{remote[2][stage] / local[stage]:10.2f} {remote[1][stage] / remote[2][stage]:15.2f}")
            total_local, total_1, total_2 = (sum(s.values()) for s in (local, remote[1], remote[2]))
            print(f"{'total':<10s} {total_local:8.2f} {total_1:9.2f} {total_2:9.2f} {total_2 / total_local:10.2f} "
                  f"{total_1 / total_2:15.2f}")
            print(f"throughput: local {corpus.n_cuts / total_local:,.0f} cuts/s, Ray 1 worker "
                  f"{corpus.n_cuts / total_1:,.0f}, Ray 2 workers {corpus.n_cuts / total_2:,.0f}")
            print(f"Ray outputs byte-identical to local (grouped, params, rescored): {same}")

            if not args.skip_decode:
                print("\ndecode of the demo set (200 cuts), shards of 50 cuts, beam 8, n-best 8:")
                rtf = {}
                for actors in (1, 2):
                    executor = RayExecutor(ExecutorConfig(kind="ray", address=cluster.address, decode_actors=actors,
                                                          shard_cuts=50))
                    summary = decode_on_ray(ROOT / "benchmarks/accented/demo/cuts.jsonl.gz", work / f"dec{actors}",
                                            "default", DecodeConfig(), executor, force=True)
                    rtf[actors] = summary.rtf
                    print(f"  {actors} actor(s): {summary.seconds:6.1f} s for {summary.audio_seconds:.0f} s of audio, "
                          f"RTF {summary.rtf:.4f}")
                print(f"  scaling 2 actors / 1: {rtf[1] / rtf[2]:.2f}x")
                hours = 10_000
                per_actor = 3600 * hours * rtf[1]
                efficiency = rtf[1] / rtf[2] / 2
                print(f"\nprojection, 10,000 h at the 1-actor CPU RTF {rtf[1]:.4f}: {per_actor / 3600:,.0f} "
                      f"actor-hours; at the measured 2-actor efficiency {efficiency:.0%} per actor, N nodes x A "
                      f"actors take about {per_actor / 3600 / efficiency:,.0f} / (N*A) hours")
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
