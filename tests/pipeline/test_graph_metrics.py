"""The graph-metric registry: built-in metrics, a toy metric registered in one function, and its checks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.errors import ChoralError, InputError
from choral.pipeline.fields import load_array
from choral.pipeline.graph import (
    CutGraph,
    GraphConfig,
    build_graph,
    get_metric,
    metric_names,
    register_metric,
    unregister_metric,
)
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import read_cuts
from choral.pipeline.run_config import load_run_config
from choral.pipeline.synthetic import SyntheticCorpus

TOY = "toy-l1"


def toy_l1(series: Sequence[np.ndarray], pair_a: np.ndarray, pair_b: np.ndarray, window: int | None) -> np.ndarray:
    """Sum of absolute differences of the pooled embeddings."""
    matrix = np.stack(series).astype(np.float64)
    return np.abs(matrix[pair_a] - matrix[pair_b]).sum(axis=1)


@pytest.fixture()
def toy_metric() -> Iterator[str]:
    """``toy-l1`` registered for one test only."""
    register_metric(TOY, field="embedding", ndim=1, same_shape=True,
                    description="sum of absolute differences of the pooled embeddings")(toy_l1)
    try:
        yield TOY
    finally:
        unregister_metric(TOY)
    assert TOY not in metric_names()


@pytest.fixture(scope="module")
def grouped(small_corpus: SyntheticCorpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("grouped") / "grouped.jsonl.gz"
    group_manifest(small_corpus.decoded, output)
    return output


def test_built_in_metrics_in_order() -> None:
    assert metric_names() == ("dtw-vector", "dtw-frames", "cosine")
    frames = get_metric("dtw-frames")
    assert (frames.field, frames.ndim, frames.same_shape) == ("frames", 2, False)
    cosine = get_metric("cosine")
    assert (cosine.field, cosine.ndim, cosine.same_shape) == ("embedding", 1, True)
    assert all(get_metric(name).description for name in metric_names())


def test_unknown_metric_lists_the_registered_ones() -> None:
    with pytest.raises(ChoralError, match=r"^unknown metric 'euclid'; choose one of dtw-vector, dtw-frames, cosine$"):
        GraphConfig(metric="euclid")


def test_toy_metric_is_used_by_build_graph(toy_metric: str, grouped: Path, tmp_path: Path) -> None:
    assert metric_names()[-1] == toy_metric
    summary = build_graph(grouped, tmp_path / "graph.npz", config=GraphConfig(metric=toy_metric))
    assert summary.n_pairs > 0 and summary.n_edges > 0
    graph = CutGraph.load(tmp_path / "graph.npz")
    assert graph.metric == toy_metric
    cosine = CutGraph.load(build_graph(grouped, tmp_path / "cosine.npz", config=GraphConfig(metric="cosine")).output)
    assert np.array_equal(graph.pair_a, cosine.pair_a) and np.array_equal(graph.pair_b, cosine.pair_b)
    # the stored distances are the toy function's, on the pooled embeddings it declared
    embeddings = [load_array(cut, "embedding", grouped) for cut in read_cuts(grouped)]
    np.testing.assert_allclose(graph.distances, toy_l1(embeddings, graph.pair_a, graph.pair_b, None))


def test_toy_metric_is_listed_and_accepted_by_the_cli(toy_metric: str, grouped: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["graph", "--help"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.replace("│", " ").split())  # the help panel wraps lines
    assert "one of dtw-vector, dtw-frames, cosine, toy-l1." in text
    assert "toy-l1: sum of absolute differences of the pooled embeddings." in text
    result = runner.invoke(app, ["graph", str(grouped), str(tmp_path / "graph.npz"), "--metric", toy_metric])
    assert result.exit_code == 0, result.output
    assert CutGraph.load(tmp_path / "graph.npz").metric == toy_metric


def test_toy_metric_in_a_run_config(toy_metric: str, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"input:\n  audio_dir: audio\ngraph:\n  metric: {toy_metric}\n", encoding="utf-8")
    assert load_run_config(config).graph.metric == toy_metric


def test_unknown_metric_in_a_run_config_names_the_key_and_the_registered_metrics(toy_metric: str,
                                                                                tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("input:\n  audio_dir: audio\ngraph:\n  metric: euclid\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"key 'graph.metric' must be 'dtw-vector' or .*'{toy_metric}', not 'euclid'"):
        load_run_config(config)


def test_declared_rank_is_checked(grouped: Path, tmp_path: Path) -> None:
    register_metric("toy-rank", field="embedding", ndim=2, same_shape=False, description="wrong rank")(toy_l1)
    try:
        with pytest.raises(InputError, match=r"custom.embedding must be 2-D"):
            build_graph(grouped, tmp_path / "graph.npz", config=GraphConfig(metric="toy-rank"))
    finally:
        unregister_metric("toy-rank")


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_metric("cosine", field="embedding", ndim=1, same_shape=True, description="again")(toy_l1)
    with pytest.raises(ValueError, match="field"):
        register_metric("toy-field", field="audio", ndim=1, same_shape=True,  # type: ignore[arg-type]
                        description="bad field")
    assert metric_names() == ("dtw-vector", "dtw-frames", "cosine")
