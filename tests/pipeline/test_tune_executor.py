"""tune's folds x grid on an executor: the same params.yaml and report as the serial loop, whatever order and
process the items run in (a stand-in executor here; a real Ray cluster in tests/executor/test_ray_cluster.py)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from choral.pipeline.graph import build_graph
from choral.pipeline.group import group_manifest
from choral.pipeline.synthetic import SyntheticConfig, generate
from choral.pipeline.tune import TuneConfig, tune_params, tune_stage
from choral.pipeline.tune.folds import SolveItem, plan


class ScramblingExecutor:
    """Runs items last first, each on pickled copies of the function and shared inputs (as a worker process
    would get them), one state per "worker"; answers in item order. Counts what it was sent."""

    name = "scrambling"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.items = 0
        self.puts = 0

    def put(self, value: Any) -> bytes:
        self.puts += 1
        return pickle.dumps(value)

    def _shared(self, shared: Any) -> Any:
        return pickle.loads(shared if isinstance(shared, bytes) else pickle.dumps(shared))

    def map(self, fn: Callable, items: Sequence, shared: Any = None) -> list:
        self.items += len(items)
        answers = {i: pickle.loads(pickle.dumps(fn))(self._shared(shared), pickle.loads(pickle.dumps(item)))
                   for i, item in reversed(list(enumerate(items)))}
        return [answers[i] for i in range(len(items))]

    def map_stateful(self, make_state: Callable, fn: Callable, items: Sequence, shared: Any = None) -> list:
        self.items += len(items)
        states = [pickle.loads(pickle.dumps(make_state))() for _ in range(self.workers)]
        answers = {i: fn(states[i % self.workers], self._shared(shared), item)
                   for i, item in reversed(list(enumerate(items)))}
        return [answers[i] for i in range(len(items))]


class LengthScorer:
    """A picklable teacher stand-in: a borrowed text's score falls with its length."""

    def __call__(self, cut_id: str, texts: Sequence[str]) -> list[float]:
        return [-0.2 * len(t.split()) - 0.01 * (sum(map(ord, cut_id)) % 5) for t in texts]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("tune_executor")
    corpus = generate(out, SyntheticConfig(n_prompts=30, annotated_fraction=0.3, seed=6))
    group_manifest(corpus.decoded, out / "grouped.jsonl.gz")
    build_graph(out / "grouped.jsonl.gz", out / "graph.npz")
    return out / "grouped.jsonl.gz", out / "graph.npz"


def _same_outputs(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes()
    assert a.with_suffix(".json").read_bytes() == b.with_suffix(".json").read_bytes()


@pytest.mark.parametrize("max_cuts", [None, 120], ids=["full-grid", "coarse-to-fine"])
def test_tune_on_an_executor_writes_the_same_params_and_report(searched, tmp_path: Path, max_cuts) -> None:
    grouped, graph = searched
    grid = TuneConfig(alpha=(0.5, 0.9, 0.99), fusion_weight=(0.0, 0.3, 0.6), temperature=(0.5, 1.0),
                      threshold_scale=(0.8, 1.0, 1.25), folds=3)
    serial = tune_params(grouped, graph, tmp_path / "serial.yaml", grid=grid, folds=3, max_cuts=max_cuts)
    executor = ScramblingExecutor(workers=5)
    spread = tune_params(grouped, graph, tmp_path / "spread.yaml", grid=grid, folds=3, max_cuts=max_cuts,
                         executor=executor)  # type: ignore[arg-type]
    _same_outputs(tmp_path / "serial.yaml", tmp_path / "spread.yaml")
    assert spread.best == serial.best and spread.best.calibration == serial.best.calibration
    assert executor.puts == 1  # the search's inputs were sent once, however many sweeps
    assert executor.items > 3 * 2 + 3  # several items per (fold, temperature), and one per calibration fold


def test_tune_with_a_scorer_on_stateful_workers_answers_the_same(searched, tmp_path: Path) -> None:
    grouped, graph = searched
    grid = TuneConfig(alpha=(0.5, 0.9), fusion_weight=(0.0, 0.5), temperature=(1.0,), threshold_scale=(1.0,),
                      folds=2, min_annotated=2)
    tune_stage(grouped, graph, tmp_path / "serial.yaml", grid=grid, scorer=LengthScorer())
    tune_stage(grouped, graph, tmp_path / "spread.yaml", grid=grid, scorer=LengthScorer(),
               executor=ScramblingExecutor(workers=2))  # type: ignore[arg-type]
    _same_outputs(tmp_path / "serial.yaml", tmp_path / "spread.yaml")


def test_plan_batches_grid_points_per_fold_and_temperature() -> None:
    points = [(s, a, t) for t in (0.5, 1.0) for s in (0.8, 1.0) for a in (0.5, 0.9, 0.99)]
    alone = plan(points, folds=5, workers=1)  # one item per (fold, temperature), all its points
    assert len(alone) == 10 and all(len(item.points) == 6 for item in alone)
    wide = plan(points, folds=5, workers=8)  # about two items per worker, each still several points
    assert 16 <= len(wide) <= 24 and all(len(item.points) >= 2 for item in wide)
    for items in (alone, wide):  # every (fold, point) exactly once
        solved = sorted((i.fold, (s, a, i.temperature)) for i in items for s, a in i.points)
        assert solved == sorted((f, p) for f in range(5) for p in points)
    assert isinstance(wide[0], SolveItem)
