"""Retrieval of the nearest annotated reading across groups (graph.annotated + propagate.retrieve)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from choral.pipeline.errors import ConfigError
from choral.pipeline.fields import CutResult
from choral.pipeline.graph import CutGraph
from choral.pipeline.graph.annotated import nearest_annotated
from choral.pipeline.propagate import PropagateConfig
from choral.pipeline.propagate.retrieve import annotated_readings, nearest_readings, retrieve
from choral.pipeline.propagate.stage import subgraph


def test_nearest_annotated_ranks_by_centred_cosine_and_skips_itself() -> None:
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.1, 0.9]])
    annotated = np.array([True, False, True, True, False])
    a, b = nearest_annotated(vectors, annotated, 1)
    nearest = dict(zip(a.tolist(), b.tolist()))
    assert nearest[1] == 0 and nearest[4] == 2        # unannotated cuts: their most similar annotated cut
    assert nearest[0] != 0 and nearest[2] != 2        # annotated cuts are never their own partner
    a, b = nearest_annotated(vectors, annotated, 5)   # k above the annotated count: all but oneself
    assert len(a) == 2 * 3 + 3 * 2 and not np.any(a == b)  # 2 unannotated x 3, 3 annotated x 2
    empty = nearest_annotated(vectors, np.zeros(5, dtype=bool), 3)
    assert len(empty[0]) == len(empty[1]) == 0


def _graph(pairs: list[tuple[int, int, float]], n: int) -> CutGraph:
    a, b, d = (np.array(column) for column in zip(*pairs))
    empty = np.zeros(0, dtype=np.int64)
    return CutGraph(np.array([f"c{i}" for i in range(n)]), empty, empty, np.zeros(0), 10.0, "dtw-vector",
                    annotated_a=a.astype(np.int64), annotated_b=b.astype(np.int64),
                    annotated_distances=d.astype(np.float64))


def _entries(fluency: float = -1.0) -> list:
    from choral.pipeline.propagate.labels import CutEntry
    return [
        CutEntry("c0", "g0", ["x y z", "x y w"], ["X y z", "X y w"], np.array([3 * fluency, 3 * fluency - 2])),
        CutEntry("c1", "g1", ["a b c"], ["a b c"], np.array([-9.0]), reference="a b c", reference_original="A b c"),
        CutEntry("c2", "g2", ["d e f"], ["d e f"], np.array([-9.0]), reference="d e f", reference_original="D e f"),
    ]


def _results(entries: list) -> list[CutResult]:
    return [CutResult(e.reference_original or e.originals[0], 1.0 if e.reference else 0.4, e.originals[0],
                      "reference" if e.reference else "teacher") for e in entries]


def test_struggling_one_best_takes_its_clearly_nearest_annotated_reading() -> None:
    entries, config = _entries(), PropagateConfig()
    graph = _graph([(0, 1, 5.0), (0, 2, 20.0), (1, 2, 30.0), (2, 1, 30.0)], 3)   # d1 0.5, d2 2.0 thresholds
    nearest, first, second = nearest_readings(graph, [e.reference for e in entries])
    assert nearest[0] == 1 and first[0] == pytest.approx(0.5) and second[0] == pytest.approx(2.0)
    out = retrieve(entries, _results(entries), graph, config)
    c0, c1 = config.retrieve_calibration
    assert out[0].text == "A b c" and out[0].source == "propagated" and out[0].teacher_text == "X y z"
    assert out[0].confidence == pytest.approx(1 / (1 + np.exp(-(c0 + c1 * 0.5))), abs=1e-6)
    assert out[1:] == _results(entries)[1:]           # annotated cuts keep their reference


@pytest.mark.parametrize("case", ["fluent", "far", "ambiguous", "off", "replaced", "same text"])
def test_retrieval_leaves_the_label_alone(case: str) -> None:
    entries, config = _entries(-0.1 if case == "fluent" else -1.0), PropagateConfig()
    near, other = {"far": 16.0}.get(case, 5.0), {"ambiguous": 6.0}.get(case, 20.0)
    graph = _graph([(0, 1, near), (0, 2, other)], 3)
    results = _results(entries)
    if case == "off":
        config = PropagateConfig(retrieve_reach=0.0)
    if case == "replaced":
        results[0] = replace(results[0], text="X y w", source="propagated")
    if case == "same text":
        entries[1] = replace(entries[1], reference="x y z", reference_original="X y z")
    assert retrieve(entries, results, graph, config)[0] == results[0]


def _unheard_entries(reference: str) -> list:
    """A fluent 1-best ``x y z`` (the teacher also says ``w``, never ``q`` or ``r``) and an annotated ``reference``."""
    from choral.pipeline.propagate.labels import CutEntry
    return [CutEntry("c0", "g0", ["x y z", "x y w"], ["X y z", "X y w"], np.array([-0.3, -4.0])),
            CutEntry("c1", "g1", ["x y"], ["x y"], np.array([-9.0]), reference=reference,
                     reference_original=reference.capitalize()),
            CutEntry("c2", "g2", ["d e f"], ["d e f"], np.array([-9.0]), reference="d e f", reference_original="D e f")]


@pytest.mark.parametrize("case", ["takes", "heard word", "only removes", "rewrite", "adds more", "ambiguous", "far",
                                  "off"])
def test_a_fluent_one_best_takes_a_reading_that_adds_only_unheard_words(case: str) -> None:
    reference = {"heard word": "x y w", "only removes": "x y", "rewrite": "q",
                 "adds more": "x y q r"}.get(case, "x y q")
    entries = _unheard_entries(reference)
    reach = 0.0 if case == "off" else 2.0
    config = PropagateConfig(retrieve_unheard_reach=reach, retrieve_unheard_ratio=0.9)
    near, other = {"far": 21.0}.get(case, 18.0), {"ambiguous": 19.0}.get(case, 40.0)   # over the threshold 10
    graph = _graph([(0, 1, near), (0, 2, other)], 3)
    results = _results(entries)
    out = retrieve(entries, results, graph, config)
    assert retrieve(entries, results, graph, replace(config, retrieve_unheard_reach=0.0)) == results  # fluent
    if case == "takes":
        assert out[0].text == "X y q" and out[0].source == "propagated" and out[0].teacher_text == "X y z"
        a, b = config.retrieve_unheard_calibration                 # its own calibration
        assert out[0].confidence == pytest.approx(1 / (1 + np.exp(-(a + b * 1.8))), abs=1e-6)
    else:
        assert out == results


def test_graph_keeps_annotated_pairs_and_subgraph_keeps_those_inside(tmp_path: Path) -> None:
    graph = _graph([(0, 1, 5.0), (0, 2, 20.0), (2, 1, 7.0)], 3)
    graph.save(tmp_path / "graph.npz")
    loaded = CutGraph.load(tmp_path / "graph.npz")
    assert loaded.annotated_a is not None and loaded.annotated_distances is not None
    assert loaded.annotated_a.tolist() == [0, 0, 2] and loaded.annotated_distances.tolist() == [5.0, 20.0, 7.0]
    inside = subgraph(loaded, np.array([0, 2]))
    assert inside.annotated_a.tolist() == [0] and inside.annotated_b.tolist() == [1]   # (0, 2) renumbered
    assert inside.annotated_distances.tolist() == [20.0]


@pytest.mark.parametrize("key, value", [("retrieve_reach", -1.0), ("retrieve_ratio", 0.0), ("retrieve_ratio", 1.5),
                                        ("retrieve_fluency", -0.1), ("retrieve_calibration", (1.0,)),
                                        ("retrieve_unheard_reach", -1.0), ("retrieve_unheard_ratio", 0.0),
                                        ("retrieve_unheard_ratio", 1.01), ("retrieve_unheard_calibration", (1.0,)),
                                        ("retrieve_unsure_hub", -1.0), ("retrieve_far_hub", -0.5)])
def test_bad_retrieval_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        PropagateConfig(**{key: value})


def test_annotated_readings_list_each_cuts_measured_references_nearest_first() -> None:
    graph = _graph([(0, 2, 20.0), (0, 1, 5.0), (2, 1, 7.0)], 3)
    references = [None, "a b c", "d e f"]
    readings = annotated_readings(graph, references)
    assert readings[0] == [(0.5, "a b c"), (2.0, "d e f")] and readings[1] == [] and readings[2] == [(0.7, "a b c")]
    assert annotated_readings(graph, references, scale=5.0)[0][0] == (1.0, "a b c")   # the sound scale's unit


def test_a_graph_written_before_the_retrieval_retrieves_nothing(tmp_path: Path) -> None:
    _graph([(0, 1, 5.0)], 3).save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as data:
        old = {k: data[k] for k in data.files if not k.startswith("annotated_")}
    np.savez(tmp_path / "old.npz", **old)
    graph = CutGraph.load(tmp_path / "old.npz")
    assert graph.annotated_a is None
    entries = _entries()
    assert retrieve(entries, _results(entries), graph, PropagateConfig()) == _results(entries)
    assert annotated_readings(graph, [e.reference for e in entries]) == [[], [], []]


@pytest.mark.parametrize("case", ["takes", "unsure only", "heard words", "too far", "ambiguous", "off"])
def test_the_far_path_takes_a_distant_reading_with_unheard_words_for_the_worst_readings(case: str) -> None:
    """A 1-best below -1 nat per word takes its nearest annotated reading up to 2.5 thresholds away and 0.9 times
    as near as another text's, only when that reading has a word no n-best says (``q``)."""
    from choral.pipeline.propagate.labels import CutEntry
    fluency = -0.9 if case == "unsure only" else -1.2
    reference = "a b c" if case == "heard words" else "a b q"
    entries = [CutEntry("c0", "g0", ["x y z", "x y w"], ["X y z", "X y w"], np.array([3 * fluency, 3 * fluency - 2])),
               CutEntry("c1", "g1", ["a b c"], ["a b c"], np.array([-9.0]), reference=reference,
                        reference_original=reference.capitalize()),
               CutEntry("c2", "g2", ["d e f"], ["d e f"], np.array([-9.0]), reference="d e f",
                        reference_original="D e f")]
    near, other = {"too far": 26.0}.get(case, 18.0), {"ambiguous": 19.0}.get(case, 21.0)   # threshold 10
    config = PropagateConfig(retrieve_far_reach=0.0) if case == "off" else PropagateConfig()
    graph = _graph([(0, 1, near), (0, 2, other)], 3)
    results = _results(entries)
    out = retrieve(entries, results, graph, config)
    assert retrieve(entries, results, graph, replace(config, retrieve_far_reach=0.0)) == results  # beyond the others
    if case == "takes":
        a, b = config.retrieve_far_calibration
        assert out[0].text == "A b q" and out[0].teacher_text == "X y z"
        assert out[0].confidence == pytest.approx(1 / (1 + np.exp(-(a + b * 1.8))), abs=1e-6)
    else:
        assert out == results


@pytest.mark.parametrize("key, value", [("retrieve_far_reach", -1.0), ("retrieve_far_ratio", 0.0),
                                        ("retrieve_far_fluency", -0.5), ("retrieve_far_calibration", (1.0,))])
def test_bad_far_retrieval_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        PropagateConfig(**{key: value})


class _Scorer:
    """Teacher log-likelihoods from a table (text -> score), recording what it was asked."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table, self.asked = table, []

    def __call__(self, cut_id: str, texts) -> list[float]:
        self.asked.append((cut_id, list(texts)))
        return [self.table[text] for text in texts]


@pytest.mark.parametrize("case", ["takes", "unlikely", "no scorer", "off", "too far", "not finite", "confirmed",
                                  "confirmed, test off", "other neighbour"])
def test_the_scored_path_takes_a_reading_the_teacher_finds_about_as_likely_as_its_one_best(case: str) -> None:
    """A fluent 1-best (no distance path applies) takes its nearest annotated reading within 2.5 thresholds when the
    teacher scores that reading no more than 8 nats below the 1-best and no graph neighbour is labelled with the
    1-best; the scorer sees the reading and the 1-best (threshold 10)."""
    entries = _entries(fluency=-0.1)
    reading_score = {"unlikely": -13.5, "not finite": float("nan")}.get(case, -12.0)   # the 1-best scores -5
    scorer = None if case == "no scorer" else _Scorer({"a b c": reading_score, "x y z": -5.0})
    config = PropagateConfig(retrieve_scored_reach=0.0) if case == "off" else PropagateConfig()
    adjacency = None
    if case.startswith("confirmed") or case == "other neighbour":   # c3, a neighbour of c0, reads c0's 1-best or not
        from choral.pipeline.propagate.labels import CutEntry
        hypothesis = "u v" if case == "other neighbour" else "x y z"
        entries.append(CutEntry("c3", "g0", [hypothesis], [hypothesis], np.array([-1.0])))
        adjacency = sp.csr_matrix((np.ones(2), ([0, 3], [3, 0])), shape=(4, 4))
        if case == "confirmed, test off":
            config = replace(config, retrieve_scored_alone=False)
    far = case == "too far"
    graph = _graph([(0, 1, 30.0 if far else 18.0), (0, 2, 34.0 if far else 24.0)], len(entries))   # d1 1.8 or 3
    results = _results(entries)
    assert retrieve(entries, results, graph, config) == results                    # no scorer: the path is off
    out = retrieve(entries, results, graph, config, scorer, adjacency)
    if case in ("takes", "confirmed, test off", "other neighbour"):
        a, b = config.retrieve_scored_calibration
        assert scorer is not None and scorer.asked == [("c0", ["a b c", "x y z"])]
        assert out[0].text == "A b c" and out[0].teacher_text == "X y z" and out[0].source == "propagated"
        assert out[0].confidence == pytest.approx(1 / (1 + np.exp(-(a + b * 1.8))), abs=1e-6)
        assert out[1:] == results[1:]
    else:
        assert out == results
        if case in ("off", "too far"):
            assert scorer is not None and scorer.asked == []                        # nothing scored in vain


@pytest.mark.parametrize("key, value", [("retrieve_scored_reach", -1.0), ("retrieve_scored_margin", -0.5),
                                        ("retrieve_scored_calibration", (1.0, 2.0, 3.0))])
def test_bad_scored_retrieval_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        PropagateConfig(**{key: value})


def test_hub_ratios_count_each_annotated_cut_as_nearest_over_its_even_share() -> None:
    from choral.pipeline.propagate.retrieve import hub_ratios
    nearest = np.array([3, 3, 3, 4, -1, 3, 0])                    # cuts 3, 4 (and 6) annotated
    annotated = [False, False, False, True, True, False, True]
    ratios = hub_ratios(nearest, annotated)                       # 4 unannotated with a nearest, 3 annotated cuts
    assert ratios[3] == pytest.approx(4 * 3 / 4)                  # nearest of cuts 0, 1, 2, 5; annotated 4 -> 3 ignored
    assert ratios[4] == 0.0 and ratios[0] == 0.0                  # cut 6 (annotated) does not count for cut 0


@pytest.mark.parametrize("bound, takes", [(0.0, True), (2.0, True), (1.5, False)])
def test_the_far_path_leaves_a_hub_reading_alone(bound: float, takes: bool) -> None:
    """The far path's reading c1 is the nearest of the one unannotated cut, with 2 annotated cuts: its hub ratio is
    1 x 2 / 1 = 2; a bound below it keeps the 1-best (0: no bound)."""
    from choral.pipeline.propagate.labels import CutEntry
    entries = [CutEntry("c0", "g0", ["x y z", "x y w"], ["X y z", "X y w"], np.array([-3.6, -5.6])),
               CutEntry("c1", "g1", ["a b c"], ["a b c"], np.array([-9.0]), reference="a b q",
                        reference_original="A b q"),
               CutEntry("c2", "g2", ["d e f"], ["d e f"], np.array([-9.0]), reference="d e f",
                        reference_original="D e f")]
    graph = _graph([(0, 1, 18.0), (0, 2, 21.0)], 3)
    results = _results(entries)
    out = retrieve(entries, results, graph, PropagateConfig(retrieve_far_hub=bound, retrieve_unheard_reach=0.0))
    assert (out[0].text == "A b q") is takes


def _hub_pool() -> tuple[list, CutGraph]:
    """c0 (struggling) lies 5 from c1, a hub reading 4 from three other cuts, and 6 from c2, its own prompt's reading,
    which is far from everything else: without scaling the two are too alike for the ratio test (5 / 6 > 0.6)."""
    from choral.pipeline.propagate.labels import CutEntry
    entries = _entries() + [CutEntry(f"c{i}", f"g{i}", ["u v"], ["u v"], np.array([-1.0])) for i in (3, 4, 5)]
    pairs = [(0, 1, 5.0), (0, 2, 6.0), (1, 2, 30.0), (2, 1, 30.0)]
    pairs += [(i, 1, 4.0) for i in (3, 4, 5)] + [(i, 2, 30.0) for i in (3, 4, 5)]
    return entries, _graph(pairs, 6)


def test_hub_scales_stretch_a_reading_near_everything_and_shrink_a_lonely_one() -> None:
    from choral.pipeline.propagate.retrieve import hub_scales
    _, graph = _hub_pool()
    scales = hub_scales(graph, 3)      # r_1 = mean(4, 4, 4) = 4, r_2 = mean(6, 30, 30) = 22, median 13
    assert scales[1] == pytest.approx(13 / 4) and scales[2] == pytest.approx(13 / 22)
    assert scales[[0, 3, 4, 5]].tolist() == [1.0] * 4                   # unannotated cuts keep their distances
    assert hub_scales(graph, 0).tolist() == [1.0] * 6                   # off
    assert hub_scales(graph, 100)[2] == pytest.approx((9.4 + 25.2) / 2 / 25.2)   # fewer than m: all of them
    nearest, first, second = nearest_readings(graph, [e.reference for e in _hub_pool()[0]], scales)
    assert nearest[0] == 2 and first[0] == pytest.approx(0.6 * 13 / 22) and second[0] == pytest.approx(0.5 * 13 / 4)


def test_hub_scaling_lets_a_cut_take_its_own_prompts_reading_over_a_hub() -> None:
    entries, graph = _hub_pool()
    results = _results(entries)
    config = PropagateConfig(retrieve_unheard_reach=0.0, retrieve_far_reach=0.0)
    assert retrieve(entries, results, graph, config)[0] == results[0]          # 5 / 6: ambiguous, left alone
    out = retrieve(entries, results, graph, replace(config, retrieve_hub_scale=3))
    assert out[0].text == "D e f" and out[0].teacher_text == "X y z"


def test_bad_hub_scale_names_the_key() -> None:
    with pytest.raises(ConfigError, match="retrieve_hub_scale"):
        PropagateConfig(retrieve_hub_scale=-1)


@pytest.mark.parametrize("bound, takes", [(0.0, True), (2.0, True), (1.5, False)])
def test_the_unsure_path_skips_a_hub_reading_over_its_bound(bound: float, takes: bool) -> None:
    entries, _ = _hub_pool()
    pairs = [(0, 1, 5.0), (0, 2, 20.0)] + [(i, 1, 4.0) for i in (3, 4, 5)]   # c1: nearest of all 4 unannotated cuts
    graph = _graph(pairs, 6)                                                # its share 4 / 2: hub ratio 2
    results = _results(entries)
    config = PropagateConfig(retrieve_unheard_reach=0.0, retrieve_far_reach=0.0, retrieve_unsure_hub=bound)
    out = retrieve(entries, results, graph, config)
    assert (out[0].text == "A b c") is takes and (out[0] == results[0]) is not takes


@pytest.mark.parametrize("known_word, takes", [("z", False), ("v", True)])
def test_the_unheard_path_with_known_words_keeps_a_one_best_word_a_reference_says(known_word: str,
                                                                                  takes: bool) -> None:
    """``retrieve_unheard_known``: the reading ``x y q`` would replace the 1-best's ``z``; when an annotated reading
    of the manifest says ``z`` ("bob" of "play bob dylan"), the 1-best's word is a word of the pool and stays."""
    entries = _unheard_entries("x y q")
    entries[2] = replace(entries[2], reference=f"d e {known_word}", reference_original=f"D e {known_word}")
    graph = _graph([(0, 1, 18.0), (0, 2, 40.0)], 3)
    results = _results(entries)
    config = PropagateConfig(retrieve_unheard_reach=2.0, retrieve_unheard_ratio=0.9)
    assert retrieve(entries, results, graph, config)[0].text == "X y q"              # off by default: takes
    out = retrieve(entries, results, graph, replace(config, retrieve_unheard_known=True))
    assert (out[0].text == "X y q") is takes


def _noisy(cut_id: str, snr: float | None, group: str, hypotheses: list[str] | None = None,
           reference: str | None = None, scores: list[float] | None = None):
    from choral.pipeline.propagate.labels import CutEntry
    texts = hypotheses or [reference or "x"]
    return CutEntry(cut_id, group, texts, texts, np.asarray(scores or [-1.0] * len(texts)), reference, reference,
                    snr_db=snr)


@pytest.mark.parametrize("snr_cut, snr_reading, level, takes", [(12.0, 14.0, 20.0, False), (12.0, 14.0, 0.0, True),
                                                                (12.0, 70.0, 20.0, True), (None, 14.0, 20.0, True)])
def test_the_far_path_skips_a_reading_when_both_are_noisy(snr_cut, snr_reading, level, takes) -> None:
    """The far path (a 1-best at -1.2 nats per word, its nearest annotated reading 1.8 thresholds away with an unheard
    word ``q``) takes the reading unless it and the cut are both below ``noisy_pair_snr``."""
    entries = [_noisy("c0", snr_cut, "g0", ["x y z", "x y w"], scores=[-3.6, -5.6]),
               _noisy("c1", snr_reading, "g1", ["a b c"], reference="a b q"),
               _noisy("c2", 80.0, "g2", reference="d e f")]
    results = [CutResult(e.originals[0], 0.4, e.originals[0], "teacher") if e.reference is None
               else CutResult(e.reference, 1.0, e.originals[0], "reference") for e in entries]
    graph = _graph([(0, 1, 18.0), (0, 2, 21.0)], 3)
    out = retrieve(entries, results, graph, PropagateConfig(noisy_pair_snr=level))
    assert (out[0].text == "a b q") is takes
    assert out[1:] == results[1:]
