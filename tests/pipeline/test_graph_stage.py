import json
from pathlib import Path

import numpy as np
import pytest
from lhotse import MonoCut, SupervisionSegment
from lhotse.features.io import NumpyHdf5Writer

from choral.pipeline.errors import ChoralError, InputError
from choral.pipeline.graph import CutGraph, GraphConfig, build_graph, load_adjacency, within_group_pairs
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.synthetic import SyntheticConfig, SyntheticCorpus, generate


@pytest.fixture(scope="module")
def grouped(small_corpus: SyntheticCorpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("grouped") / "grouped.jsonl.gz"
    group_manifest(small_corpus.decoded, output)
    return output


def test_within_group_pairs() -> None:
    a, b, n_groups = within_group_pairs(["x", "y", "x", "z", "x", "y"])
    assert n_groups == 3
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 2), (0, 4), (1, 5), (2, 4)]


def test_graph_links_same_prompt_cuts(grouped: Path, small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    output = tmp_path / "graph.npz"
    summary = build_graph(grouped, output)
    assert not summary.skipped and summary.fit is not None
    assert summary.fit.rule == "annotated"
    assert summary.fit.f1 is not None and summary.fit.f1 > 0.6
    threshold = json.loads((tmp_path / "threshold.json").read_text())
    assert threshold["rule"] == "annotated"
    assert threshold["threshold"] == pytest.approx(summary.fit.threshold)

    cut_ids, adjacency = load_adjacency(output)
    cuts = read_cuts(grouped)
    assert list(cut_ids) == [c.id for c in cuts]
    assert (adjacency != adjacency.T).nnz == 0
    assert adjacency.diagonal().sum() == 0
    groups = np.array([c.custom["group"] for c in cuts])
    rows, cols = adjacency.nonzero()
    assert np.all(groups[rows] == groups[cols])
    prompt = np.array([small_corpus.prompt_of_cut[c.id] for c in cuts])
    precision = np.mean(prompt[rows] == prompt[cols])
    assert precision > 0.8
    assert summary.n_edges == adjacency.nnz // 2 > 0

    graph = CutGraph.load(output)
    assert graph.metric == "dtw-vector"
    assert graph.adjacency().nnz == adjacency.nnz
    assert graph.adjacency(threshold=graph.threshold * 0.5).nnz <= adjacency.nnz


def test_rerun_skips(grouped: Path, tmp_path: Path) -> None:
    output = tmp_path / "graph.npz"
    build_graph(grouped, output)
    assert build_graph(grouped, output).skipped
    assert not build_graph(grouped, output, config=GraphConfig(metric="cosine")).skipped


@pytest.mark.parametrize("metric", ["cosine", "dtw-frames"])
def test_other_metrics(grouped: Path, tmp_path: Path, metric: str) -> None:
    summary = build_graph(grouped, tmp_path / "graph.npz", config=GraphConfig(metric=metric))
    assert summary.n_edges > 0
    assert summary.fit is not None and summary.fit.f1 is not None and summary.fit.f1 > 0.5


def test_user_threshold_and_window(grouped: Path, tmp_path: Path) -> None:
    summary = build_graph(grouped, tmp_path / "graph.npz", config=GraphConfig(threshold=1e-9, window=4))
    assert summary.fit is not None and summary.fit.rule == "user"
    assert summary.n_edges == 0
    assert summary.n_isolated == summary.n_cuts


def test_unsupervised_falls_back_without_references(tmp_path: Path) -> None:
    corpus = generate(tmp_path / "c", SyntheticConfig(n_prompts=15, annotated_fraction=0.0, seed=3))
    grouped = tmp_path / "grouped.jsonl.gz"
    group_manifest(corpus.decoded, grouped)
    summary = build_graph(grouped, tmp_path / "graph.npz", config=GraphConfig(confidence=0.6))
    assert summary.fit is not None and summary.fit.rule == "confident-teacher"
    lenient = build_graph(grouped, tmp_path / "graph2.npz", config=GraphConfig(confidence=1.01))
    assert lenient.fit is not None and lenient.fit.rule == "quantile"


def _tiny_manifest(tmp_path: Path, vectors: list[np.ndarray]) -> Path:
    path = tmp_path / "grouped.jsonl.gz"
    with NumpyHdf5Writer(tmp_path / "emb.h5") as writer:
        cuts = [MonoCut(id=f"c{i}", start=0, duration=1, channel=0,
                        supervisions=[SupervisionSegment(id=f"c{i}", recording_id=f"c{i}", start=0, duration=1,
                                                         text="play jazz")],
                        custom={"nbest": [{"text": "play jazz", "score": -0.1}], "group": "g0000000",
                                "embedding": writer.store_array(f"c{i}", v.astype(np.float32))})
                for i, v in enumerate(vectors)]
    write_cuts(cuts, path)
    return path


def test_nan_embedding_fails_naming_the_cut_and_writes_nothing(tmp_path: Path) -> None:
    bad = np.ones(8)
    bad[3] = np.nan
    grouped = _tiny_manifest(tmp_path, [np.ones(8), bad, np.zeros(8)])
    with pytest.raises(InputError, match=r"grouped.jsonl.gz \(cut c1\): custom.embedding holds NaN"):
        build_graph(grouped, tmp_path / "graph.npz")
    assert not (tmp_path / "graph.npz").exists()
    assert not (tmp_path / "threshold.json").exists()


def test_missing_group_and_missing_file(tmp_path: Path, small_corpus: SyntheticCorpus) -> None:
    with pytest.raises(InputError, match="no custom.group"):
        build_graph(small_corpus.decoded, tmp_path / "graph.npz")
    with pytest.raises(InputError, match="file not found"):
        build_graph(tmp_path / "absent.jsonl.gz", tmp_path / "graph.npz")
    with pytest.raises(ChoralError, match="unknown metric"):
        GraphConfig(metric="euclid")


def test_nearest_neighbours_join_the_threshold_edges() -> None:
    # 4 cuts in one group; cut 3 is far from everyone, so only its nearest link can reach it
    pairs = [(0, 1, 1.0), (0, 2, 2.0), (0, 3, 9.0), (1, 2, 1.5), (1, 3, 8.0), (2, 3, 7.0)]
    graph = CutGraph(cut_ids=np.array(["a", "b", "c", "d"]), pair_a=np.array([p[0] for p in pairs]),
                     pair_b=np.array([p[1] for p in pairs]), distances=np.array([p[2] for p in pairs]),
                     threshold=1.2, metric="dtw-vector")
    plain = graph.adjacency()
    assert plain.nnz == 2 and plain[0, 1] == 1  # only 0-1 is under the threshold
    one = graph.adjacency(nearest=1).toarray()
    assert one[2, 0] == 0 and one[2, 1] == 1 and one[3, 2] == 1  # each cut's closest candidate
    assert (one == one.T).all() and one[3, 0] == 0 and one[3, 1] == 0
    two = graph.adjacency(nearest=2).toarray()
    assert two[3, 1] == 1 and two[3, 0] == 0 and (two >= one).all()


def test_graph_measures_each_cut_against_its_nearest_annotated_cuts(grouped: Path, tmp_path: Path) -> None:
    build_graph(grouped, tmp_path / "graph.npz", config=GraphConfig(annotated_nearest=2))
    graph = CutGraph.load(tmp_path / "graph.npz")
    cuts = read_cuts(grouped)
    annotated = np.array([any(s.text for s in c.supervisions) for c in cuts])
    assert graph.annotated_a is not None and graph.annotated_b is not None and graph.annotated_distances is not None
    assert np.all(annotated[graph.annotated_b]) and not np.any(graph.annotated_a == graph.annotated_b)
    assert np.all(np.bincount(graph.annotated_a, minlength=len(cuts)) == 2)    # k = 2 partners for every cut
    from choral.kernels import dtw
    series = [np.asarray(c.load_custom("embedding"), dtype=np.float64) for c in cuts]
    direct = dtw.paired(series, graph.annotated_a, graph.annotated_b)
    assert np.allclose(graph.annotated_distances, direct)                      # the graph's own metric
    build_graph(grouped, tmp_path / "off.npz", config=GraphConfig(annotated_nearest=0))
    off = CutGraph.load(tmp_path / "off.npz").annotated_a
    assert off is not None and len(off) == 0
