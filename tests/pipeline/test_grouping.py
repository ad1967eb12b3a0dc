"""Tests for MinHash/LSH grouping of cuts by the overlap of their n-best word sets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from choral.pipeline.errors import ChoralError
from choral.pipeline.group import Grouping, GroupingConfig, group_hypotheses

VOCABULARY = [f"w{i}" for i in range(3000)]


def read_prompt(prompt: list[str], rng: np.random.Generator, error_rate: float, n_best: int) -> list[str]:
    """N-best list of one reading.

    The best hypothesis replaces words by random ones at ``error_rate`` (this
    speaker's errors); every other hypothesis swaps one word of the best for
    its confusable twin (``w12`` -> ``w12s``), as n-best alternatives do.
    """
    best = [rng.choice(VOCABULARY) if rng.random() < error_rate else word for word in prompt]
    hypotheses = [" ".join(best)]
    for _ in range(n_best - 1):
        alternative = list(best)
        position = rng.integers(len(best))
        alternative[position] += "s"
        hypotheses.append(" ".join(alternative))
    return hypotheses


def corpus(
    n_prompts: int, readings: int, seed: int = 0, error_rate: float = 0.1
) -> tuple[list[list[str]], np.ndarray]:
    """Shuffled readings of random 8-12 word prompts, and the prompt of every cut."""
    rng = np.random.default_rng(seed)
    prompts = [list(rng.choice(VOCABULARY, rng.integers(8, 13), replace=False)) for _ in range(n_prompts)]
    prompt_of_cut = rng.permutation(np.repeat(np.arange(n_prompts), readings))
    hypotheses = [read_prompt(prompts[p], rng, error_rate, int(rng.integers(3, 6))) for p in prompt_of_cut]
    return hypotheses, prompt_of_cut


def purity_and_completeness(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Purity: cuts whose group's majority class is theirs; completeness: cuts in their class's largest group."""
    table = np.zeros((labels.max() + 1, truth.max() + 1), np.int64)
    np.add.at(table, (labels, truth), 1)
    return table.max(axis=1).sum() / labels.size, table.max(axis=0).sum() / labels.size


def exact_components(hypotheses: list[list[str]], config: GroupingConfig) -> np.ndarray:
    """Connected components of the graph linking every pair with Jaccard >= threshold (all pairs)."""
    sets = [set(" ".join(h[: config.top_k]).split()) for h in hypotheses]
    n = len(sets)
    u, v = [], []
    for a in range(n):
        for b in range(a + 1, n):
            if sets[a] and len(sets[a] & sets[b]) >= config.jaccard_threshold * len(sets[a] | sets[b]):
                u.append(a)
                v.append(b)
    graph = coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def members(grouping: Grouping, cuts: range | list[int]) -> set[int]:
    """Groups that the given cuts belong to."""
    return {int(grouping.labels[i]) for i in cuts}


# --- grouping quality ---------------------------------------------------------------------------


def test_readings_of_a_prompt_form_one_group_and_prompts_stay_apart() -> None:
    hypotheses, prompt = corpus(n_prompts=50, readings=8, error_rate=0.05)
    grouping = group_hypotheses(hypotheses)
    purity, completeness = purity_and_completeness(grouping.labels, prompt)
    assert purity >= 0.99
    assert completeness >= 0.97


def test_matches_the_exact_all_pairs_grouping() -> None:
    """On noisy readings, compare with the components of the exact threshold graph
    (all pairs): every group lies inside one exact component (links are verified),
    and LSH finds nearly all of the exact grouping."""
    hypotheses, _ = corpus(n_prompts=40, readings=10, seed=3, error_rate=0.2)
    exact = exact_components(hypotheses, GroupingConfig())
    labels = group_hypotheses(hypotheses).labels
    table = np.zeros((labels.max() + 1, exact.max() + 1), np.int64)
    np.add.at(table, (labels, exact), 1)
    assert np.all(np.count_nonzero(table, axis=1) == 1)  # a refinement of the exact grouping
    pairs = table * (table - 1) // 2
    exact_sizes = np.bincount(exact)
    assert pairs.sum() / (exact_sizes * (exact_sizes - 1) // 2).sum() >= 0.93


def test_identical_inputs_form_one_group() -> None:
    grouping = group_hypotheses([["the cat sat on the mat", "the cat sat on a mat"]] * 30)
    assert grouping.n_groups == 1
    assert grouping.sizes.tolist() == [30]
    assert grouping.labels.tolist() == [0] * 30


def test_only_the_first_top_k_hypotheses_count() -> None:
    same_top = [["a b c d", "a b c e", "a b c f", f"x{i} y{i} z{i} q{i} r{i} s{i} t{i}"] for i in range(2)]
    assert group_hypotheses(same_top).n_groups == 1
    # With top_k=1 only "a b c d" vs "p q r s" is compared: no overlap.
    first_differs = [["a b c d", "p q r s"], ["p q r s", "a b c d"]]
    assert group_hypotheses(first_differs, GroupingConfig(top_k=2)).n_groups == 1
    assert group_hypotheses(first_differs, GroupingConfig(top_k=1)).n_groups == 2


def test_threshold_is_inclusive() -> None:
    # {a b c d} vs {a b c e f}: 3 shared of 6 -> Jaccard exactly 0.5.
    pair = [["a b c d"], ["a b c e f"]]
    assert group_hypotheses(pair, GroupingConfig(jaccard_threshold=0.5)).n_groups == 1
    assert group_hypotheses(pair, GroupingConfig(jaccard_threshold=0.51)).n_groups == 2


# --- empty input and singletons -----------------------------------------------------------------


def test_cuts_without_words_are_singletons() -> None:
    hypotheses: list[list[str]] = [[], [""], ["a b c"], [], ["a b c"], ["", ""]]
    grouping = group_hypotheses(hypotheses)
    assert grouping.labels.tolist() == [0, 1, 2, 3, 2, 4]
    assert grouping.sizes.tolist() == [1, 1, 2, 1, 1]
    assert grouping.is_singleton().tolist() == [True, True, False, True, False, True]
    assert grouping.n_singletons == 4
    assert grouping.largest == 2


def test_no_cuts() -> None:
    grouping = group_hypotheses([])
    assert grouping.n_cuts == grouping.n_groups == grouping.largest == grouping.n_split == 0


def test_all_cuts_empty() -> None:
    grouping = group_hypotheses([[]] * 4)
    assert grouping.labels.tolist() == [0, 1, 2, 3]


def test_labels_are_numbered_in_order_of_first_appearance() -> None:
    hypotheses, _ = corpus(n_prompts=20, readings=5, seed=1)
    labels = group_hypotheses(hypotheses).labels
    first_seen = np.maximum.accumulate(labels)
    assert labels[0] == 0
    assert np.all(np.diff(first_seen) <= 1)  # a new label is always the next number
    assert labels.dtype == np.int64


def test_result_arrays_are_read_only() -> None:
    grouping = group_hypotheses([["a b"], ["a b"]])
    with pytest.raises(ValueError):
        grouping.labels[0] = 5


def test_progress_reports_cuts_processed() -> None:
    hypotheses, _ = corpus(n_prompts=10, readings=4)
    seen: list[int] = []
    group_hypotheses(hypotheses, progress=seen.append)
    assert seen and seen[-1] == len(hypotheses)
    assert seen == sorted(seen)


def test_a_single_string_per_cut_is_rejected() -> None:
    with pytest.raises(TypeError, match="sequence of strings"):
        group_hypotheses(["a b c", "a b c"])  # type: ignore[list-item]


# --- weak chains --------------------------------------------------------------------------------


def test_weak_bridges_do_not_merge_distinct_prompts() -> None:
    """Cuts that share a third of their words with each of two prompts are LSH
    candidates of both, but the verified links keep the prompts apart."""
    x = [f"x{i}" for i in range(10)]
    y = [f"y{i}" for i in range(10)]
    readings = [[" ".join(x)]] * 10 + [[" ".join(y)]] * 10
    rng = np.random.default_rng(0)
    bridges = [[" ".join(list(rng.choice(x, 5, replace=False)) + list(rng.choice(y, 5, replace=False)))]
               for _ in range(30)]
    hypotheses = readings + bridges
    strict = group_hypotheses(hypotheses)
    assert members(strict, range(10)).isdisjoint(members(strict, range(10, 20)))
    # Without a real check (any overlap links) the bridges glue x and y together.
    lax = group_hypotheses(hypotheses, GroupingConfig(jaccard_threshold=0.01))
    assert members(lax, range(10)) == members(lax, range(10, 20))


# --- splitting large components -----------------------------------------------------------------


def test_large_components_are_split_into_balanced_chunks() -> None:
    hypotheses = [["one two three four five six"]] * 450
    grouping = group_hypotheses(hypotheses, GroupingConfig(max_group_size=200))
    assert sorted(grouping.sizes.tolist()) == [150, 150, 150]
    assert grouping.n_split == 1


@pytest.mark.parametrize("size, max_size", [(201, 200), (399, 100), (1000, 7)])
def test_split_sizes_never_exceed_the_maximum_and_differ_by_at_most_one(size: int, max_size: int) -> None:
    grouping = group_hypotheses([["a b c d e"]] * size, GroupingConfig(max_group_size=max_size))
    assert grouping.sizes.max() <= max_size
    assert grouping.sizes.max() - grouping.sizes.min() <= 1
    assert grouping.n_groups == -(-size // max_size)


def test_splitting_keeps_similar_cuts_together() -> None:
    """Two overlapping prompts (Jaccard 7/13 > 0.5) fuse into one component of
    300 cuts; split in two, each chunk should hold one prompt."""
    shared = [f"s{i}" for i in range(7)]
    a, b = shared + ["a1", "a2", "a3"], shared + ["b1", "b2", "b3"]
    rng = np.random.default_rng(0)
    prompt_of_cut = rng.permutation(np.repeat([0, 1], 150))
    hypotheses = [[" ".join((a, b)[p])] for p in prompt_of_cut]
    grouping = group_hypotheses(hypotheses, GroupingConfig(max_group_size=150))
    assert grouping.n_split == 1
    assert sorted(grouping.sizes.tolist()) == [150, 150]
    purity, _ = purity_and_completeness(grouping.labels, prompt_of_cut)
    assert purity == 1.0


def test_small_components_are_not_split() -> None:
    grouping = group_hypotheses([["a b c"]] * 200, GroupingConfig(max_group_size=200))
    assert grouping.n_groups == 1 and grouping.n_split == 0


# --- determinism ---------------------------------------------------------------------------------


def test_same_input_and_seed_give_the_same_grouping() -> None:
    hypotheses, _ = corpus(n_prompts=30, readings=6, seed=2, error_rate=0.2)
    first = group_hypotheses(hypotheses, GroupingConfig(seed=7))
    second = group_hypotheses([list(h) for h in hypotheses], GroupingConfig(seed=7))
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.sizes, second.sizes)


def test_clean_groups_do_not_depend_on_the_seed() -> None:
    hypotheses, _ = corpus(n_prompts=30, readings=6, seed=4, error_rate=0.05)
    labels = [group_hypotheses(hypotheses, GroupingConfig(seed=seed)).labels for seed in range(3)]
    assert all(np.array_equal(labels[0], other) for other in labels[1:])


# --- configuration -------------------------------------------------------------------------------


def test_default_bands_find_pairs_at_the_threshold() -> None:
    config = GroupingConfig()
    assert config.num_perm == config.bands * config.rows
    assert config.detection_probability(config.jaccard_threshold) > 0.98
    assert config.detection_probability(0.1) < 0.2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_perm": 30, "bands": 16}, "divisible"),
        ({"jaccard_threshold": 0.0}, r"\(0, 1\]"),
        ({"jaccard_threshold": 1.5}, r"\(0, 1\]"),
        ({"jaccard_threshold": "0.5"}, "number"),
        ({"top_k": 0}, "top_k"),
        ({"num_perm": 0}, "num_perm"),
        ({"bands": 0}, "bands"),
        ({"max_group_size": 0}, "max_group_size"),
        ({"seed": -1}, "seed"),
        ({"top_k": 2.5}, "integer"),
        ({"bands": True}, "integer"),
    ],
)
def test_invalid_config_is_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ChoralError, match=message):
        GroupingConfig(**kwargs)  # type: ignore[arg-type]


def test_threshold_one_groups_only_identical_word_sets() -> None:
    hypotheses = [["a b c"], ["c b a"], ["a b c d"], ["a b c"]]
    grouping = group_hypotheses(hypotheses, GroupingConfig(jaccard_threshold=1.0))
    assert grouping.labels.tolist() == [0, 0, 1, 0]
