"""Options of issue 12 part 4: length-normalised teacher scores, propagation rounds, k-nearest edges (alone and
chosen by tune)."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from choral.pipeline.config import from_mapping
from choral.pipeline.errors import ConfigError
from choral.pipeline.graph import CutGraph, build_graph
from choral.pipeline.group import group_manifest
from choral.pipeline.propagate import CutEntry, PropagateConfig, load_params, rescore
from choral.pipeline.propagate.engine import length_normalised
from choral.pipeline.synthetic import SyntheticConfig, generate
from choral.pipeline.text import normalize
from choral.pipeline.tune import TuneConfig, tune_stage


def entry(cut_id: str, texts: list[str], scores: list[float], reference: str | None = None,
          group: str = "g0") -> CutEntry:
    return CutEntry(cut_id, group, [normalize(t) for t in texts], texts, np.asarray(scores),
                    normalize(reference) if reference else None, reference)


def test_length_normalisation_scales_to_the_one_best_length() -> None:
    e = entry("a", ["play jazz", "play jazz music now"], [-2.0, -3.0])
    scaled = length_normalised(e)
    assert scaled.scores[0] == pytest.approx(-2.0)
    assert scaled.scores[1] == pytest.approx(-3.0 * 10 / 20)  # "play jazz" + end = 10, the other 20
    assert e.scores[1] == -3.0                                   # the entry itself is left alone


def test_length_normalisation_stops_a_short_text_winning_by_being_short() -> None:
    # the teacher's total log-likelihood favours the truncated reading; per character the full one is better
    e = entry("a", ["set an alarm", "set an alarm for seven tomorrow"], [-4.0, -6.0])
    other = entry("b", ["stop"], [-0.1], group="g1")
    plain = rescore([e, other], sp.csr_matrix((2, 2)), PropagateConfig())
    assert plain[0].text == "set an alarm"
    # no edge: the teacher's 1-best stays (length normalisation only re-weights candidates being compared)
    linked = [e, entry("c", ["set an alarm for seven tomorrow", "set an alarm"], [-5.0, -5.5])]
    graph = sp.csr_matrix(np.array([[0, 1.0], [1.0, 0]]))
    assert rescore(linked, graph, PropagateConfig(fusion_weight=1.0))[0].text == "set an alarm"
    assert rescore(linked, graph, PropagateConfig(fusion_weight=1.0, length_norm=True))[0].text == \
        "set an alarm for seven tomorrow"


def test_rounds_seed_confident_labels_and_reach_further() -> None:
    # a chain: annotated a - b - c - d; d's teacher prefers a wrong text the chain never saw annotated
    entries = [
        entry("a", ["call home"], [-0.1], reference="call home"),
        entry("b", ["call home", "fall home"], [-0.2, -3.0]),
        entry("c", ["fall home", "call home"], [-0.6, -0.9]),
        entry("d", ["fall home", "call home"], [-0.6, -0.9]),
    ]
    chain = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=float))
    one = rescore(entries, chain, PropagateConfig(alpha=0.9, fusion_weight=0.3))
    three = rescore(entries, chain, PropagateConfig(alpha=0.9, fusion_weight=0.3, rounds=3, round_confidence=0.5))
    assert [r.text for r in one] == [r.text for r in three] == ["call home"] * 4
    # seeded b and c carry the annotated label further: d grows more confident in it
    assert three[3].confidence > one[3].confidence + 0.1
    # the risk the ablation measures: a confident wrong answer seeds itself too
    wrong_one = rescore(entries, chain, PropagateConfig(alpha=0.5, fusion_weight=0.5))
    wrong_three = rescore(entries, chain, PropagateConfig(alpha=0.5, fusion_weight=0.5, rounds=3,
                                                          round_confidence=0.5))
    assert wrong_one[3].text == wrong_three[3].text == "fall home"
    assert wrong_three[3].confidence > wrong_one[3].confidence
    with pytest.raises(ConfigError, match="rounds"):
        PropagateConfig(rounds=0)
    with pytest.raises(ConfigError, match="round_confidence"):
        PropagateConfig(round_confidence=0.0)


def test_nearest_only_keeps_the_k_nearest_edges_alone() -> None:
    graph = CutGraph(cut_ids=np.array(["a", "b", "c"]), pair_a=np.array([0, 0, 1]), pair_b=np.array([1, 2, 2]),
                     distances=np.array([1.0, 5.0, 2.0]), threshold=3.0, metric="cosine")
    assert graph.adjacency().nnz == 4                              # 0-1 and 1-2 under the threshold
    only = graph.adjacency(nearest=1, threshold_edges=False).toarray()
    assert only[0, 1] == 1 and only[1, 2] == 1 and only[0, 2] == 0  # a's nearest is b, c's nearest is b
    assert graph.adjacency(threshold=0.5, nearest=1, threshold_edges=False).nnz == only.astype(bool).sum()
    with pytest.raises(ConfigError, match="nearest_only"):
        PropagateConfig(nearest_only=True)


def test_new_keys_are_read_strictly(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    config = from_mapping(PropagateConfig, {"consensus": 4, "length_norm": True, "rounds": 2, "nearest": 3,
                                            "nearest_only": True}, path, "propagate")
    assert (config.consensus, config.length_norm, config.rounds, config.nearest_only) == (4, True, 2, True)
    path.write_text("propagate:\n  consensus: many\n")
    with pytest.raises(Exception, match="consensus"):
        load_params(path)
    with pytest.raises(ConfigError, match="nearest"):
        TuneConfig(nearest=(-1,))
    assert from_mapping(TuneConfig, {"nearest": [0, 2, 4]}, path, "tune").nearest == (0, 2, 4)
    with pytest.raises(Exception, match="key 'tune.nearest' must be counts >= 0"):
        from_mapping(TuneConfig, {"nearest": [-2]}, path, "tune")


def test_tune_chooses_k_nearest_by_cross_validation(tmp_path: Path) -> None:
    corpus = generate(tmp_path, SyntheticConfig(n_prompts=20, annotated_fraction=0.3, seed=3))
    group_manifest(corpus.decoded, tmp_path / "grouped.jsonl.gz")
    build_graph(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz")
    grid = TuneConfig(alpha=(0.9,), fusion_weight=(0.3,), temperature=(1.0,), threshold_scale=(1.0,), folds=3,
                      nearest=(0, 2, 5))
    summary = tune_stage(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz", tmp_path / "params.yaml", grid=grid)
    assert summary.tuned is not None
    report = json.loads((tmp_path / "params.json").read_text())
    tried = report["nearest"]
    assert set(tried) == {"0", "2", "5"}
    chosen = load_params(tmp_path / "params.yaml").nearest
    assert tried[str(chosen)] == min(tried.values())
    assert "propagate" in yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert sorted(p.name for p in tmp_path.glob("params*")) == ["params.json", "params.yaml", "params.yaml.meta.json"]
