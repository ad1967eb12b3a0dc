"""Every stage on a real Ray cluster (a head and a second node on this machine, 1 CPU each): the same
answers as the local executor, a worker killed mid-decode and mid-propagate, a driver killed mid-run.

Marked ``ray``: ``pytest -m ray`` runs only these, ``-m 'not ray'`` leaves them out; ``make test`` runs them.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from choral.pipeline.decode import DecodeConfig, decode_manifest  # noqa: E402
from choral.pipeline.executor import ExecutorConfig  # noqa: E402
from choral.pipeline.executor.ray_backend import RayExecutor  # noqa: E402
from choral.pipeline.executor.ray_decode import decode_on_ray  # noqa: E402
from choral.pipeline.executor.rescoring import parallel_rescorer  # noqa: E402
from choral.pipeline.graph import GraphConfig, build_graph  # noqa: E402
from choral.pipeline.group import GroupingConfig, group_manifest  # noqa: E402
from choral.pipeline.manifest import iter_cuts, iter_json_lines  # noqa: E402
from choral.pipeline.propagate import PropagateConfig, load_params, propagate_manifest  # noqa: E402
from choral.pipeline.run import load_run_config, run_pipeline  # noqa: E402
from choral.pipeline.synthetic import SyntheticConfig, generate  # noqa: E402
from choral.pipeline.tune import TuneConfig, tune_params, tune_stage  # noqa: E402

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "benchmarks" / "accented" / "demo"
STORE = 80 * 1024 * 1024  # object store per node: small, as the machine is


@pytest.fixture(scope="module")
def cluster():
    """A head node and one more node, 1 CPU each (2 in all), on this machine."""
    if ray.is_initialized():
        ray.shutdown()
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                          "include_dashboard": False})
    made.add_node(num_cpus=1, object_store_memory=STORE)
    made.wait_for_nodes()
    yield made
    if ray.is_initialized():
        ray.shutdown()
    made.shutdown()


def _driver(cluster, **env: str) -> RayExecutor:
    """This process as a driver of ``cluster``, its workers getting ``env`` (the fault pause point)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=cluster.address, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", **env}},
             log_to_driver=False, include_dashboard=False)
    return RayExecutor(ExecutorConfig(kind="ray", address=cluster.address, decode_actors=2, shard_cuts=10))


def _killer(folder: Path, stage: str, killed: list[int]) -> threading.Thread:
    """Kill (SIGKILL) the worker that waits at ``stage``'s pause point, once it is there."""

    def kill() -> None:
        marker = folder / f"{stage}.pid"
        deadline = time.monotonic() + 900  # the stages before it may be slow on a loaded machine
        while time.monotonic() < deadline:
            if marker.is_file() and marker.read_text():
                pid = int(marker.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return stream.read().splitlines()


def _without_storage(path: Path) -> list[dict]:
    """The cuts of ``path`` with the array storage paths dropped (the only field a sharded decode changes)."""

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "storage_path"}
        return [strip(v) for v in node] if isinstance(node, list) else node

    return [strip(json.loads(line)) for line in _lines(path)]


def _same(a: object, b: object, rel: float = 1e-6) -> bool:
    """Equal structures, texts and integers exactly, floats to ``rel``: graph distances come from float32 GEMM
    tiles whose packing follows how pairs are batched (kernels/dtw.py), so a Ray run's distances, and the learned
    threshold and confidences after them, may differ from a local run's in the 7th digit."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=rel)
    return a == b


def _rescoring(decoded: Path, out: Path, executor: RayExecutor | None) -> Path:
    """group -> graph -> tune -> propagate of ``decoded`` into ``out``, on ``executor`` (None: local)."""
    grouping = GroupingConfig(max_group_size=12)  # several split groups: the embedding split path too
    base = PropagateConfig(batch_cuts=40)  # several batches of whole groups: several propagate items
    group_manifest(decoded, out / "grouped.jsonl.gz", grouping, executor=executor)
    build_graph(out / "grouped.jsonl.gz", out / "graph.npz", None, GraphConfig(), executor=executor)
    tune_stage(out / "grouped.jsonl.gz", out / "graph.npz", out / "params.yaml", base=base,
               grid=TuneConfig(alpha=(0.5, 0.9), fusion_weight=(0.3, 0.6), temperature=(1.0,)), executor=executor)
    config = load_params(out / "params.yaml", base=base)
    rescorer = {} if executor is None else {"rescorer": parallel_rescorer(executor)}
    propagate_manifest(out / "grouped.jsonl.gz", out / "graph.npz", out / "rescored.jsonl.gz", config, **rescorer)
    return out / "rescored.jsonl.gz"


def test_synthetic_set_same_answers_with_a_propagate_worker_killed(cluster, tmp_path: Path) -> None:
    corpus = generate(tmp_path / "synth", SyntheticConfig(n_prompts=40, annotated_fraction=0.2, seed=3))
    local = _rescoring(corpus.decoded, tmp_path / "local", None)
    pause = tmp_path / "pause"
    pause.mkdir()
    executor = _driver(cluster, CHORAL_FAULT_PAUSE=f"propagate:{pause}", CHORAL_FAULT_PAUSE_SECONDS="60")
    killed: list[int] = []
    killer = _killer(pause, "propagate", killed)
    try:
        remote = _rescoring(corpus.decoded, tmp_path / "ray", executor)
    finally:
        ray.shutdown()
    killer.join(1)
    assert killed, "no propagate worker reached the pause point"
    for name in ("grouped.jsonl.gz", "params.json", "rescored.jsonl.gz"):  # byte for byte: same input, same answers
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    # params.yaml too, but for the grouped manifest's path its first line names
    assert [(tmp_path / side / "params.yaml").read_text().splitlines()[1:] for side in ("ray", "local")] \
        == [(tmp_path / "local" / "params.yaml").read_text().splitlines()[1:]] * 2
    assert (tmp_path / "ray" / "threshold.json").read_text() == (tmp_path / "local" / "threshold.json").read_text()
    ids = [cut.id for cut in iter_cuts(remote)]
    assert len(ids) == len(set(ids)) == corpus.n_cuts
    assert ids == [cut.id for cut in iter_cuts(local)]


def test_tune_on_ray_chooses_the_same_parameters_and_calibration(cluster, tmp_path: Path) -> None:
    """Folds x grid as Ray tasks (full grid, coarse to fine) and on scorer actors: params.yaml and its report
    byte for byte those of the local run."""
    corpus = generate(tmp_path / "synth", SyntheticConfig(n_prompts=30, annotated_fraction=0.3, seed=6))
    grouped, graph = tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz"
    group_manifest(corpus.decoded, grouped)
    build_graph(grouped, graph)

    def scorer(cut_id: str, texts: list[str]) -> list[float]:  # pickled by value to the actors
        return [-0.2 * len(t.split()) - 0.01 * (sum(map(ord, cut_id)) % 5) for t in texts]

    grid = TuneConfig(alpha=(0.5, 0.9, 0.99), fusion_weight=(0.0, 0.3, 0.6), temperature=(0.5, 1.0), folds=3)
    runs = {"full": {"grid": grid}, "coarse": {"grid": grid, "max_cuts": 120},
            "scored": {"grid": replace(grid, temperature=(1.0,), threshold_scale=(1.0,)), "scorer": scorer}}
    for name, options in runs.items():
        tune_params(grouped, graph, tmp_path / "local" / f"{name}.yaml", folds=3, **options)
    executor = _driver(cluster)
    try:
        for name, options in runs.items():
            tune_params(grouped, graph, tmp_path / "ray" / f"{name}.yaml", folds=3, executor=executor, **options)
    finally:
        ray.shutdown()
    for name in runs:
        for suffix in (".yaml", ".json"):
            local, remote = (tmp_path / side / f"{name}{suffix}" for side in ("local", "ray"))
            assert remote.read_bytes() == local.read_bytes(), f"{name}{suffix}"
    report = json.loads((tmp_path / "ray" / "coarse.json").read_text())
    assert report["search"]["solved_points"] < report["search"]["grid_points"] and report["calibration"]["fitted"]


def _demo_subset(tmp_path: Path, every: int = 4) -> Path:
    """Every ``every``-th demo cut (all accents), its references, and a run config over them."""
    cuts = [line for i, line in enumerate(_lines(DEMO / "cuts.jsonl.gz")) if i % every == 0]
    ids = {json.loads(line)["id"] for line in cuts}
    references = [line for line in _lines(DEMO / "references.jsonl.gz") if json.loads(line)["id"] in ids]
    for name, lines in (("cuts.jsonl.gz", cuts), ("references.jsonl.gz", references)):
        with gzip.open(tmp_path / name, "wt", encoding="utf-8") as stream:
            stream.write("".join(line + "\n" for line in lines))
    config = tmp_path / "run.yaml"
    config.write_text(f"""run_dir: runs/x
threads: 1
input:
  cuts: cuts.jsonl.gz
  audio_root: {ROOT}
decode:
  save_frames: true
  batch_duration: 10             # a few cuts per batch: several shards of whole batches
graph:
  metric: dtw-frames
tune:
  folds: 2
export:
  format: lhotse
eval:
  references: references.jsonl.gz
  by: [accent]
executor:
  shard_cuts: 5
  decode_actors: 2
""", encoding="utf-8")
    return config


def test_decode_with_a_worker_killed_decodes_every_cut_once(cluster, tmp_path: Path) -> None:
    config = _demo_subset(tmp_path, every=8)  # 25 cuts, about 3 shards
    cuts = tmp_path / "cuts.jsonl.gz"
    decode = DecodeConfig(nbest=4, beam=4, batch_duration=8)
    local = decode_manifest(cuts, tmp_path / "local", "default", decode)
    pause = tmp_path / "pause"
    pause.mkdir()
    executor = _driver(cluster, CHORAL_FAULT_PAUSE=f"decode:{pause}", CHORAL_FAULT_PAUSE_SECONDS="60")
    killed: list[int] = []
    killer = _killer(pause, "decode", killed)
    try:
        summary = decode_on_ray(cuts, tmp_path / "ray", "default", decode, executor)
    finally:
        ray.shutdown()
    killer.join(1)
    assert killed, "no decode actor reached the pause point"
    assert config.is_file()
    index = tmp_path / "ray" / "decoded.shards.json"
    assert len(json.loads(index.read_text())["shards"]) >= 2
    ids = [cut.id for cut in iter_cuts(index)]
    assert len(ids) == len(set(ids)) == local.n_decoded == summary.n_decoded
    assert [d["id"] for _, d in iter_json_lines(index)] == [cut.id for cut in iter_cuts(local.output)]
    assert _without_storage(local.output) == [d for shard in json.loads(index.read_text())["shards"]
                                              for d in _without_storage(tmp_path / "ray" / shard)]


def test_demo_run_resumes_after_the_driver_is_killed(cluster, tmp_path: Path) -> None:
    if ray.is_initialized():
        ray.shutdown()
    config_file = _demo_subset(tmp_path, every=8)  # 25 cuts, about 4 shards
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHORAL_FAULT_PAUSE": f"decode:{pause}",
           "CHORAL_FAULT_PAUSE_SECONDS": "120"}
    command = [str(Path(sys.executable).parent / "choral"), "run", str(config_file), "--executor", "ray",
               "--ray-address", cluster.address]
    run_dir = tmp_path / "runs" / "x"
    shards = run_dir / "decode" / "shards"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240

        def done() -> int:
            return len(list(shards.glob("*/decoded.jsonl.gz.meta.json")))

        # one actor waits at the pause point on its shard; the other decodes all the others
        while time.monotonic() < deadline and not (shards.is_dir() and 0 < len(list(shards.glob("*/cuts.jsonl.gz")))
                                                    - 1 == done()):
            assert driver.poll() is None, driver.stdout.read().decode() if driver.stdout else ""
            time.sleep(0.2)
        n_shards = len(list(shards.glob("*/cuts.jsonl.gz")))
        assert n_shards >= 3 and done() == n_shards - 1
    finally:
        driver.kill()
        driver.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in shards.glob("*/decoded.jsonl.gz")}
    assert len(finished) == n_shards - 1 and not (run_dir / "decode" / "decoded.shards.json").exists()

    env.pop("CHORAL_FAULT_PAUSE")
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in shards.glob("*/decoded.jsonl.gz")}
    assert len(after) == n_shards
    assert {name: after[name] for name in finished} == finished  # the finished shards were not decoded again
    ids = [cut.id for cut in iter_cuts(run_dir / "decode" / "decoded.shards.json")]
    assert len(ids) == len(set(ids)) == 25
    assert json.loads((run_dir / "run.json").read_text())["status"] == "ok"

    # the same labels as the local executor (only the embeddings' storage paths differ)
    local_config = load_run_config(config_file)
    local_config = replace(local_config, run_dir=tmp_path / "local")
    run_pipeline(local_config)
    local_rescored = _without_storage(tmp_path / "local" / "rescored.jsonl.gz")
    assert _same(_without_storage(run_dir / "rescored.jsonl.gz"), local_rescored)
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert _same(report, json.loads((tmp_path / "local" / "eval" / "report.json").read_text()))



def test_decode_on_ray_runs_the_teacher_in_the_precision_asked(cluster, tmp_path: Path) -> None:
    """The actors open the teacher on the device and in the precision asked: float16 on Ray (real half arithmetic
    on these CPU nodes) gives exactly the local float16 decode, which differs from float32's; float16 keys the
    sidecar, so asking float32 afterwards decodes again and gives the local float32 decode."""
    _demo_subset(tmp_path, every=25)  # 8 cuts
    cuts = tmp_path / "cuts.jsonl.gz"
    decode = DecodeConfig(nbest=4, beam=4, batch_duration=8)
    half = _without_storage(decode_manifest(cuts, tmp_path / "half", "default", decode, precision="float16").output)
    full = _without_storage(decode_manifest(cuts, tmp_path / "full", "default", decode, precision="float32").output)
    assert [[h["score"] for h in c["custom"]["nbest"]] for c in half] != \
        [[h["score"] for h in c["custom"]["nbest"]] for c in full]
    index = tmp_path / "ray" / "decoded.shards.json"

    def ray_cuts() -> list[dict]:
        return [d for shard in json.loads(index.read_text())["shards"]
                for d in _without_storage(tmp_path / "ray" / shard)]

    executor = _driver(cluster)
    try:
        first = decode_on_ray(cuts, tmp_path / "ray", "default", decode, executor, device="cpu", precision="float16")
        assert first.n_decoded == 8 and ray_cuts() == half
        assert decode_on_ray(cuts, tmp_path / "ray", "default", decode, executor, precision="float16").skipped
        assert not decode_on_ray(cuts, tmp_path / "ray", "default", decode, executor, precision="float32").skipped
        assert ray_cuts() == full
    finally:
        ray.shutdown()
