"""Groups formed by sound: the cuts word overlap leaves alone, grouped by their pooled embeddings (grouping
step 5), linked to their nearest in the graph, and decided without the teacher's veto."""

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from choral.pipeline.errors import ConfigError
from choral.pipeline.graph import CutGraph, GraphConfig, build_graph
from choral.pipeline.graph.threshold import bimodal_split
from choral.pipeline.group import GroupingConfig, group_hypotheses, group_manifest
from choral.pipeline.group.acoustic import group_singletons, mutual_neighbours
from choral.pipeline.grouped import formed_by_sound
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.propagate import PropagateConfig, propagate_manifest
from choral.pipeline.propagate.calibrate import Candidates, Rule, candidates, decide
from choral.pipeline.propagate.engine import propagate_batch
from choral.pipeline.propagate.labels import CutEntry, build_group_labels, fused_scores, heard_words
from choral.pipeline.synthetic import SyntheticCorpus


def _clusters(rng: np.random.Generator, sizes: list[int], spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Vectors around one random centre per cluster, and each vector's cluster."""
    centres = rng.normal(size=(len(sizes), 16))
    owner = np.repeat(np.arange(len(sizes)), sizes)
    return centres[owner] + spread * rng.normal(size=(len(owner), 16)), owner


def test_mutual_neighbours_stay_inside_clusters() -> None:
    vectors, owner = _clusters(np.random.default_rng(0), [4, 4, 3])
    u, v, s = mutual_neighbours(vectors, k=2)
    assert len(u) > 0 and (u < v).all() and (owner[u] == owner[v]).all()
    assert (s > 0.5).all()
    # a pair is kept only when each end is among the other's 2 nearest: no cut has more than 2 links
    assert max(Counter(np.concatenate([u, v]).tolist()).values()) <= 2
    assert mutual_neighbours(vectors[:1], k=3)[0].size == 0


def test_group_singletons_respects_the_size_cap() -> None:
    vectors, owner = _clusters(np.random.default_rng(1), [6, 3])
    labels = group_singletons(vectors, k=3, max_size=4)
    sizes = Counter(labels.tolist())
    assert max(sizes.values()) <= 4
    for label in sizes:  # every cluster of the output lies inside one true cluster
        assert len(set(owner[labels == label].tolist())) == 1


def test_group_hypotheses_groups_singletons_by_sound_only_when_asked() -> None:
    rng = np.random.default_rng(2)
    vectors, owner = _clusters(rng, [3, 3])
    # two readings of one prompt the teacher reads well, then six readings it cannot read (no shared word)
    hypotheses = [["play jazz in the kitchen"], ["play jazz in the kitchen"]]
    hypotheses += [[f"junk{i} noise{i}"] for i in range(6)]
    all_vectors = np.vstack([rng.normal(size=(2, 16)), vectors])

    def embeddings(indices: np.ndarray) -> np.ndarray:
        return all_vectors[indices]

    plain = group_hypotheses(hypotheses, GroupingConfig(acoustic_neighbours=0), embeddings=embeddings)
    assert plain.n_singletons == 6 and plain.by_sound is not None and not plain.by_sound.any()
    grouping = group_hypotheses(hypotheses, GroupingConfig(acoustic_neighbours=2), embeddings=embeddings)
    assert grouping.labels[0] == grouping.labels[1]
    assert grouping.by_sound is not None and not grouping.by_sound[grouping.labels[0]]
    sound = grouping.labels[2:]
    assert grouping.by_sound[sound].all()
    assert len(set(sound[owner == 0].tolist())) == 1 and len(set(sound[owner == 1].tolist())) == 1
    assert sound[owner == 0][0] != sound[owner == 1][0]
    with pytest.raises(ConfigError, match="acoustic_neighbours"):
        GroupingConfig(acoustic_neighbours=-1)


def _unreadable(small_corpus: SyntheticCorpus, tmp_path: Path, prompts: set[int]) -> Path:
    """The corpus' decoded manifest with the readings of ``prompts`` made unreadable: every hypothesis is a
    word of its own, so no two cuts share one."""
    cuts = read_cuts(small_corpus.decoded)
    changed = []
    for index, cut in enumerate(cuts):
        if small_corpus.prompt_of_cut[cut.id] in prompts:
            word = "".join(chr(ord("a") + int(d)) for d in f"{index:04d}")  # letters: digits would be spelt out
            nbest = [dict(h, text=f"zz{word}q{chr(ord('a') + k)}") for k, h in enumerate(cut.custom["nbest"])]
            cut = cut.with_custom("nbest", nbest)
        changed.append(cut)
    path = tmp_path / "decoded.jsonl.gz"
    write_cuts(changed, path)
    return path


def test_unreadable_readings_are_grouped_by_sound_and_linked(small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    prompts = {0, 1, 2}
    decoded = _unreadable(small_corpus, tmp_path, prompts)
    plain = group_manifest(decoded, tmp_path / "plain.jsonl.gz", GroupingConfig(acoustic_neighbours=0))
    assert plain.n_by_sound == 0 and plain.n_singletons >= 8 * len(prompts)

    grouped = tmp_path / "grouped.jsonl.gz"
    summary = group_manifest(decoded, grouped, GroupingConfig(acoustic_neighbours=3))
    assert summary.n_by_sound > 0 and summary.n_singletons < plain.n_singletons
    by_group: dict[str, list[int]] = defaultdict(list)
    for cut in read_cuts(grouped):
        prompt = small_corpus.prompt_of_cut[cut.id]
        assert formed_by_sound(cut.custom["group"]) == (prompt in prompts and cut.custom["group_size"] > 1)
        by_group[cut.custom["group"]].append(prompt)
    sound_groups = [members for group, members in by_group.items() if formed_by_sound(group)]
    # the pooled embeddings tell the three prompts apart: each sound group is mostly one prompt
    in_modal = sum(max(Counter(m).values()) for m in sound_groups)
    assert in_modal / sum(len(m) for m in sound_groups) > 0.8

    graph_file = tmp_path / "graph.npz"
    build_graph(grouped, graph_file, config=GraphConfig(metric="dtw-frames"))
    graph = CutGraph.load(graph_file)
    assert graph.pair_sound is not None and graph.pair_sound.any()
    assert graph.sound_nearest == GraphConfig().sound_nearest
    # a cut of a sound group is linked to its nearest when within 2 x the threshold, even if beyond it
    sound_cuts = np.unique(np.concatenate([graph.pair_a[graph.pair_sound], graph.pair_b[graph.pair_sound]]))
    loose = graph.adjacency(threshold=graph.threshold * 100)
    assert (np.diff(loose.indptr)[sound_cuts] >= 1).all()
    tight = float(np.median(graph.distances[graph.pair_sound])) / 2
    off = CutGraph(graph.cut_ids, graph.pair_a, graph.pair_b, graph.distances, graph.threshold, graph.metric,
                   graph.pair_sound, 0, graph.sound_reach, graph.isolated_reach)
    with_sound, without = graph.adjacency(threshold=tight).toarray(), off.adjacency(threshold=tight).toarray()
    assert with_sound.sum() > without.sum()
    word_pairs = ~graph.pair_sound  # word-grouped pairs are linked by the threshold alone either way
    assert (with_sound[graph.pair_a[word_pairs], graph.pair_b[word_pairs]]
            == without[graph.pair_a[word_pairs], graph.pair_b[word_pairs]]).all()


def test_annotated_readings_of_unheard_words_reach_their_neighbours(small_corpus: SyntheticCorpus,
                                                                    tmp_path: Path) -> None:
    """End to end: readings the teacher cannot read, of a sentence whose annotated readings have words no
    hypothesis has, take that reference; cuts of the word groups keep what they had."""
    prompts = {0, 1, 2}
    cuts = read_cuts(_unreadable(small_corpus, tmp_path, prompts))
    unheard = {p: f"quokka{'abc'[p]} marmalade{'abc'[p]} zeppelin" for p in prompts}
    changed = []
    for cut in cuts:
        prompt = small_corpus.prompt_of_cut[cut.id]
        if prompt in prompts and cut.supervisions[0].text is not None:
            cut.supervisions[0].text = unheard[prompt]
        changed.append(cut)
    decoded = tmp_path / "decoded-unheard.jsonl.gz"
    write_cuts(changed, decoded)
    grouped, graph_file, out = tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz", tmp_path / "rescored.jsonl.gz"
    group_manifest(decoded, grouped, GroupingConfig(acoustic_neighbours=3))
    build_graph(grouped, graph_file, config=GraphConfig(metric="dtw-frames"))
    # no scorer: borrowed texts get the floor log-posterior, so the calibrated p is not this test's concern
    propagate_manifest(grouped, graph_file, out, PropagateConfig(alpha=0.99, unheard_confidence=0.0))
    results = read_cuts(out)
    annotated_in = {(c.custom["group"], small_corpus.prompt_of_cut[c.id]) for c in results
                    if c.supervisions[0].text is not None}
    took = Counter()
    for cut in results:
        prompt = small_corpus.prompt_of_cut[cut.id]
        label = cut.custom["choral"][0]["text"]
        if prompt in prompts and cut.supervisions[0].text is None:
            assert label == unheard[prompt] or label.startswith("zz")  # the reference of its own sentence, or kept
            if (cut.custom["group"], prompt) in annotated_in:  # an annotated reading of its sentence is in its group
                took[label == unheard[prompt]] += 1
        elif prompt not in prompts:
            assert not label.startswith(("quokka", "zz"))
    assert took[True] >= 3 and took[True] > 2 * took[False]


def test_sound_edges_reach_and_files_written_before_them(tmp_path: Path) -> None:
    # group 1 (cuts 0-2) formed by words, group 2 (cuts 3-5) by sound; threshold 1
    pairs = [(0, 1, 0.5), (0, 2, 3.0), (1, 2, 3.5), (3, 4, 1.5), (3, 5, 2.5), (4, 5, 4.0)]
    a, b, d = (np.array([p[i] for p in pairs]) for i in range(3))
    sound = np.array([False, False, False, True, True, True])
    graph = CutGraph(np.array(list("abcdef")), a, b, d, 1.0, "dtw-frames", sound, 1, 2.0)
    edges = graph.adjacency().toarray()
    assert edges[0, 1] == 1 and edges[0, 2] == 0 and edges[1, 2] == 0   # word group: the threshold alone
    assert edges[3, 4] == 1 and edges[3, 5] == 0                         # 5's nearest (3) is beyond 2 x 1
    unlimited = CutGraph(graph.cut_ids, a, b, d, 1.0, "dtw-frames", sound, 1, 0.0).adjacency().toarray()
    assert unlimited[3, 5] == 1 and unlimited[4, 5] == 0 and unlimited[0, 2] == 0
    path = tmp_path / "graph.npz"
    graph.save(path)
    again = CutGraph.load(path)
    assert again.pair_sound is not None and (again.pair_sound == sound).all()
    assert (again.sound_nearest, again.sound_reach) == (1, 2.0)
    with np.load(path) as data:  # a graph.npz from before groups formed by sound
        old = {k: data[k] for k in data.files if not k.startswith(("pair_sound", "sound_"))}
    np.savez(path, **old)
    legacy = CutGraph.load(path)
    assert legacy.pair_sound is None and legacy.sound_nearest == 0
    assert legacy.adjacency().nnz == 2
    with pytest.raises(ConfigError, match="sound_reach"):
        GraphConfig(sound_reach=-1.0)


def test_the_sound_scale_is_the_split_of_two_modes_and_moves_the_reaches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    same, other = rng.normal(np.log(140), 0.12, 300), rng.normal(np.log(240), 0.08, 900)
    split = bimodal_split(np.exp(np.concatenate([same, other])))
    assert split is not None and 165 < split < 205                       # between the modes, closer to neither
    assert bimodal_split(np.exp(rng.normal(np.log(200), 0.2, 1200))) is None       # one mode: no split
    assert bimodal_split(np.array([140.0, 240.0, 250.0])) is None                 # too few pairs
    # a sound group (cuts 0-2) whose reaches count in the split (10), not the learned threshold (4)
    a, b, d = np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([12.0, 25.0, 30.0])
    sound = np.ones(3, dtype=bool)
    graph = CutGraph(np.array(list("abc")), a, b, d, 4.0, "dtw-frames", sound, 1, 2.0, 0.0, 10.0)
    edges = graph.adjacency().toarray()
    assert edges[0, 1] == 1 and edges[0, 2] == 0                          # 12 <= 2 x 10; 25 > 20
    assert graph.adjacency(threshold=5.0).toarray()[0, 2] == 1           # tune's scale 1.25 moves the reach: 25
    assert graph.sound_distances().toarray()[0, 1] == pytest.approx(1.2)
    graph.save(tmp_path / "graph.npz")
    assert CutGraph.load(tmp_path / "graph.npz").sound_threshold == 10.0
    none = CutGraph(graph.cut_ids, a, b, d, 4.0, "dtw-frames", sound, 1, 2.0)
    none.save(tmp_path / "none.npz")
    assert CutGraph.load(tmp_path / "none.npz").sound_scale == 4.0      # no split found: the learned threshold
    with pytest.raises(ConfigError, match="sound_scale"):
        GraphConfig(sound_scale="median")  # type: ignore[arg-type]


def test_a_word_group_cut_without_edges_links_to_its_nearest_within_the_isolated_reach() -> None:
    # one word group: 0-1 linked (0.5); 2's nearest is 1 (1.6), then 0 (1.9); 3's nearest is 2 at 2.5
    pairs = [(0, 1, 0.5), (1, 2, 1.6), (0, 2, 1.9), (2, 3, 2.5), (0, 3, 3.0), (1, 3, 3.2)]
    a, b, d = (np.array([p[i] for p in pairs]) for i in range(3))
    graph = CutGraph(np.array(list("abcd")), a, b, d, 1.0, "dtw-frames", np.zeros(6, dtype=bool), 0, 0.0, 2.0)
    edges = graph.adjacency().toarray()
    assert edges[1, 2] == 1 and edges[0, 2] == 0                          # only the nearest of an isolated cut
    assert edges[2, 3] == 0 and edges[3].sum() == 0                       # 3's nearest is beyond 2 x 1
    assert CutGraph(graph.cut_ids, a, b, d, 1.0, "dtw-frames", None, 0, 0.0, 0.0).adjacency().nnz == 2   # off
    all_sound = CutGraph(graph.cut_ids, a, b, d, 1.0, "dtw-frames", np.ones(6, dtype=bool), 0, 0.0, 2.0)
    assert all_sound.adjacency().nnz == 2                                  # no word group: nothing to link
    with pytest.raises(ConfigError, match="isolated_reach"):
        GraphConfig(isolated_reach=-1.0)


def _entry(cut_id: str, group: str, hypotheses: list[str], reference: str | None = None) -> CutEntry:
    return CutEntry(cut_id, group, hypotheses, hypotheses, np.arange(0.0, -len(hypotheses), -1.0), reference)


def test_fusion_in_a_sound_group_ignores_the_teacher_and_admits_only_own_texts_and_references() -> None:
    entries = [_entry("r", "a0000001", ["ref words here"], "ref words here"),
               _entry("n", "a0000001", ["other junk"]),
               _entry("c", "a0000001", ["own junk", "own junk two"])]
    labels = build_group_labels(entries, 1.0, 64)
    assert labels.references == 1 and labels.texts[0] == "ref words here"
    width = len(labels.texts)
    teacher = np.full(width, -np.inf)
    support = np.full(width, 0.1)
    own = labels.index["own junk"]
    teacher[own], teacher[labels.index["own junk two"]] = -0.1, -2.0
    teacher[0], teacher[labels.index["other junk"]] = -300.0, -5.0   # borrowed: scored by the teacher
    support[0], support[labels.index["other junk"]] = 0.4, 0.5
    fused = fused_scores(entries[2], labels, teacher, support, fusion_weight=0.5)
    assert not np.isfinite(fused[labels.index["other junk"]])        # a neighbour's reading is not admitted
    assert int(np.argmax(fused)) == 0                                 # the reference wins on support alone
    assert fused[0] == pytest.approx(np.log(0.4 + 1e-12))
    words = fused_scores(_entry("c", "g0000001", entries[2].hypotheses), labels, teacher, support, 0.5)
    assert int(np.argmax(words)) == own and np.isfinite(words[labels.index["other junk"]])


# a winner the teacher scores 12 nats below its 1-best, and that 1-best (calibrate.FEATURES order)
_X_WINNER = np.array([1.0, -0.1, -12.0, -0.2, 0.7, 0.7, 1.2, 0.0, 0.7])
_X_BEST = np.array([1.0, -3.0, -0.1, -3.0, 0.0, 0.0, 0.0, 1.0, 0.7])


def _annotated_and_unsure():
    """A group formed by sound: an annotated reading and a cut whose teacher scores -1.5 nats per word."""
    entries = [_entry("r", "a0000001", ["the potter shaped a vase"], "the potter shaped a vase"),
               CutEntry("c", "a0000001", ["sun set in", "sun sat"], ["sun set in", "sun sat"], np.array([-4.5, -6.0]))]
    adjacency = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]))
    return propagate_batch(entries, adjacency, np.zeros(2, dtype=np.int64), PropagateConfig()), adjacency


def test_no_teacher_veto_on_unheard_words_but_the_winner_must_be_more_likely_right() -> None:
    x_winner, x_best = _X_WINNER, _X_BEST
    found = Candidates(0, 1, x_winner, x_best, 8, 3)
    assert not decide(found, Rule(veto=8.0)).replaced                 # the teacher vetoes: 11.9 nats below
    word_group = Candidates(0, 1, x_winner, x_best, 8, 3, unheard=True)     # unheard words in a word group
    assert not decide(word_group, Rule(veto=8.0, unheard_anywhere=False)).replaced
    unheard = Candidates(0, 1, x_winner, x_best, 8, 3, unheard=True, by_sound=True, source_distance=1.2)
    far = Candidates(0, 1, x_winner, x_best, 8, 3, unheard=True, by_sound=True, source_distance=1.6)
    assert not decide(far, Rule(veto=8.0)).replaced                     # its annotated reading is beyond 1.3
    assert decide(far, Rule(veto=8.0, unheard_reach=0.0)).replaced      # 0: no limit
    decision = decide(unheard, Rule(veto=8.0))
    assert decision.replaced and decision.confidence > 0.5
    assert decide(found, Rule(veto=0.0)).replaced
    assert decide(word_group, Rule(veto=8.0)).replaced                   # unheard_anywhere, the default
    # the same evidence, but p(winner) no higher than the bar: the teacher's reading stays
    assert not decide(unheard, Rule(veto=8.0, unheard_confidence=decision.confidence)).replaced
    with pytest.raises(ConfigError, match="unheard_confidence"):
        PropagateConfig(unheard_confidence=1.0)


def test_beyond_the_reach_only_a_teacher_unsure_of_its_own_reading_loses_its_veto() -> None:
    x_winner, x_best = _X_WINNER, _X_BEST

    def far(fluency: float) -> Candidates:
        return Candidates(0, 1, x_winner, x_best, 8, 3, unheard=True, by_sound=True, source_distance=1.8,
                          fluency=fluency)

    assert decide(far(-1.5), Rule(veto=8.0)).replaced                   # 1.5 nats/word: the teacher is unsure
    assert not decide(far(-0.4), Rule(veto=8.0)).replaced               # a fluent reading keeps its veto
    assert not decide(far(-1.5), Rule(veto=8.0, unheard_fluency=0.0)).replaced   # 0: the reach alone
    assert not decide(far(-1.5), Rule(veto=8.0, unheard_fluency=2.0)).replaced
    word_group = Candidates(0, 1, x_winner, x_best, 8, 3, unheard=True, fluency=-0.1)
    assert decide(word_group, Rule(veto=8.0)).replaced                  # word groups: unheard_anywhere decides
    with pytest.raises(ConfigError, match="unheard_fluency"):
        PropagateConfig(unheard_fluency=-1.0)
    # candidates() reads the fluency from the teacher's score of the 1-best over its word count
    batch, adjacency = _annotated_and_unsure()
    found = candidates(batch, adjacency, 1, 0.0)
    assert found is not None and found.fluency == pytest.approx(-1.5) and found.by_sound


def test_heard_words_are_the_batch_hypotheses_words_unless_given() -> None:
    entries = [_entry("a", "g1", ["play jazz", "play jas"]), _entry("b", "a2", ["sun set"], "the potter shaped")]
    assert heard_words(entries) == {"play", "jazz", "jas", "sun", "set"}   # references are not heard
    adjacency = sp.csr_matrix((2, 2))
    batch = propagate_batch(entries, adjacency, np.zeros(2, dtype=np.int64), PropagateConfig())
    assert batch.heard == heard_words(entries)
    given = frozenset({"play", "potter"})   # tune: the words of every searched cut, not just the fold's groups
    batch = propagate_batch(entries, adjacency, np.zeros(2, dtype=np.int64), PropagateConfig(), heard=given)
    assert batch.heard == given


def test_beyond_the_reach_the_winners_reading_must_be_nearer_than_any_other_texts() -> None:
    x_winner, x_best = _X_WINNER, _X_BEST

    def far(rival: float) -> Candidates:
        return Candidates(0, 1, x_winner, x_best, 8, 3, unheard=True, by_sound=True, source_distance=1.8,
                          fluency=-1.5, rival_distance=rival)

    assert decide(far(2.0), Rule(veto=8.0)).replaced                    # the winner's reading is the nearest
    assert not decide(far(1.5), Rule(veto=8.0)).replaced                # another text's reading is nearer
    assert decide(far(1.5), Rule(veto=8.0, unheard_rival=0.0)).replaced  # 0: off
    assert decide(far(1.5), Rule(veto=8.0, unheard_rival=1.25)).replaced
    within = Candidates(0, 1, x_winner, x_best, 8, 3, unheard=True, by_sound=True, source_distance=1.2,
                        fluency=-0.1, rival_distance=0.5)
    assert decide(within, Rule(veto=8.0)).replaced                      # within the reach: no rival test
    with pytest.raises(ConfigError, match="unheard_rival"):
        PropagateConfig(unheard_rival=-1.0)
    # candidates() reads the rival from the cut's measured annotated readings of other texts
    batch, adjacency = _annotated_and_unsure()
    readings = [[], [(1.1, "the potter shaped a vase"), (1.4, "a kettle boiled over"), (2.0, "sun set in")]]
    found = candidates(batch, adjacency, 1, 0.0, readings=readings)
    assert found is not None and found.rival_distance == pytest.approx(1.4)   # not the winner's own text
