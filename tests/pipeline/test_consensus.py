"""Word-level consensus (issue 12 part 4): the confusion network, its best paths, and the engine's use of them."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from choral.pipeline.errors import ConfigError
from choral.pipeline.propagate import CutEntry, PropagateConfig, rescore
from choral.pipeline.propagate.consensus import EPSILON, best_paths, build_network, consensus_candidates
from choral.pipeline.text import normalize


def test_network_aligns_insertions_and_deletions_and_every_slot_sums_to_the_total() -> None:
    network = build_network([("a b c".split(), 1.0), ("a c".split(), 1.0), ("x a b c d".split(), 2.0)])
    assert network.slots == [{"x": 2.0, EPSILON: 2.0}, {"a": 4.0}, {"b": 3.0, EPSILON: 1.0}, {"c": 4.0},
                             {"d": 2.0, EPSILON: 2.0}]
    for slot in network.posteriors():
        assert sum(slot.values()) == pytest.approx(1.0)


def test_best_paths_rank_by_product_of_slot_shares() -> None:
    network = build_network([("turn on the light".split(), 0.6), ("turn of the lights".split(), 0.4)])
    paths = best_paths(network, 4)
    # the two mixed paths tie at 0.24: the lexicographically smaller text first
    assert [text for text, _ in paths] == ["turn on the light", "turn of the light", "turn on the lights",
                                           "turn of the lights"]
    assert paths[0][1] == pytest.approx(math.log(0.6 * 0.6))
    assert paths[1][1] == pytest.approx(math.log(0.6 * 0.4))


def test_consensus_finds_a_transcript_no_input_has_whole() -> None:
    inputs = [("turn on the kitchen light", 0.4), ("turn of the kitchen lights", 0.35),
              ("turn on a kitchen lights", 0.25)]
    combined = consensus_candidates(inputs, 2)
    assert combined[0][0] == "turn on the kitchen lights"
    assert all(text not in dict(inputs) for text, _ in combined)
    assert consensus_candidates(inputs, 2, exclude={"turn on the kitchen lights"})[0][0] != "turn on the kitchen lights"
    assert consensus_candidates(inputs[:1], 2) == []           # one transcript: nothing to combine
    assert consensus_candidates([("same words", 0.5), ("same words", 0.5)], 3) == []
    with pytest.raises(ValueError, match="weight"):
        build_network([("a".split(), 0.0)])


def entry(cut_id: str, texts: list[str], scores: list[float], reference: str | None = None) -> CutEntry:
    return CutEntry(cut_id, "g0", [normalize(t) for t in texts], texts, np.asarray(scores),
                    normalize(reference) if reference else None, reference)


def complete_graph(n: int) -> sp.csr_matrix:
    return sp.csr_matrix(np.ones((n, n)) - np.eye(n))


def test_engine_lets_the_teacher_pick_a_combination() -> None:
    # every cut has one word wrong, a different one: each word is right in two of the three
    entries = [
        entry("a", ["turn on the kitchen light"], [-3.0]),
        entry("b", ["turn of the kitchen lights"], [-3.0]),
        entry("c", ["turn on a kitchen lights"], [-3.0]),
    ]
    right = "turn on the kitchen lights"
    calls: list[list[str]] = []

    def scorer(cut_id: str, texts):
        calls.append(list(texts))
        return [-0.05 if t == right else -6.0 for t in texts]  # the 1-bests score -3

    config = PropagateConfig(alpha=0.9, fusion_weight=0.7)
    without = rescore(entries, complete_graph(3), config, scorer=scorer)
    assert all(r.text != right for r in without)
    calls.clear()
    with_consensus = rescore(entries, complete_graph(3), PropagateConfig(alpha=0.9, fusion_weight=0.7, consensus=3),
                             scorer=scorer)
    assert [r.text for r in with_consensus] == [right] * 3
    assert all(r.source == "propagated" for r in with_consensus)
    assert any(right in texts for texts in calls)
    # without a scorer a combination gets the borrowed floor, like a borrowed text, and loses to a whole one
    floor = rescore(entries, complete_graph(3), PropagateConfig(alpha=0.9, fusion_weight=0.7, consensus=3))
    assert all(r.text != right for r in floor)


def test_consensus_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="consensus_inputs"):
        PropagateConfig(consensus=2, consensus_inputs=1)
    with pytest.raises(ConfigError, match="consensus"):
        PropagateConfig(consensus=-1)


def test_a_combination_out_voting_the_top_input_is_scored_above_it() -> None:
    network = build_network([("a b c".split(), 1.0), ("x b y".split(), 1.0), ("a z y".split(), 1.0)])
    assert network.paths == [["a", "b", "c"], ["x", "b", "y"], ["a", "z", "y"]]
    assert network.log_posterior(network.paths[0]) == pytest.approx(math.log((2 / 3) ** 2 * (1 / 3)))
    (text, ratio), *_ = consensus_candidates([("a b c", 1.0), ("x b y", 1.0), ("a z y", 1.0)], 1)
    assert text == "a b y" and ratio == pytest.approx(2.0)
    # insertions put ε into the paths of earlier inputs
    grown = build_network([("a c".split(), 1.0), ("a b c".split(), 1.0)])
    assert grown.paths == [["a", EPSILON, "c"], ["a", "b", "c"]]
