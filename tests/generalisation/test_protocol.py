"""The generalisation protocol's pure parts: conditions, prompts and pool plan, LOCO bookkeeping, RESULTS.md.

No speech is synthesised: rendering is tested on a synthetic waveform, pools on their plan only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from lhotse import MonoCut, SupervisionSegment

from choral.pipeline.evaluate import evaluate
from choral.pipeline.manifest import write_cuts

PROTOCOL = Path(__file__).resolve().parents[2] / "benchmarks" / "generalisation"


@pytest.fixture(scope="module")
def gen():
    """The protocol's modules (they put benchmarks/accented on the path themselves)."""
    sys.path.insert(0, str(PROTOCOL))
    try:
        import gen_conditions
        import gen_loco
        import gen_pools
        import gen_report
        import gen_results
        yield type("Modules", (), {"conditions": gen_conditions, "pools": gen_pools, "loco": gen_loco,
                                   "results": gen_results, "report": gen_report})
    finally:
        sys.path.remove(str(PROTOCOL))


@pytest.fixture(scope="module")
def corpus(gen):
    return gen.pools.corpus_texts()


# ---- conditions -------------------------------------------------------------------------------------------

def test_no_condition_but_the_control_is_a_reading_of_the_recipe(gen) -> None:
    import corpus_voices
    import make_corpus

    recipe = {(voice, accent) for voice, accent, _ in make_corpus.POOL_CONDITIONS}
    recipe |= {("joe", accent) for accent in make_corpus.DEMO_ACCENTS}
    speakers = [s for group in corpus_voices.SPEAKERS.values() for s in group]
    pitch = (min(s.pitch for s in speakers), max(s.pitch for s in speakers))
    tempo = (min(s.length for s in speakers), max(s.length for s in speakers))
    for condition in gen.conditions.CONDITIONS.values():
        if condition.is_control:
            assert (condition.voice, condition.accent) in recipe
            continue
        outside_speakers = not (pitch[0] <= condition.pitch <= pitch[1] and tempo[0] <= condition.tempo <= tempo[1])
        # hibari's en-gb is the recipe's british lexicon: new only through its speaker factors
        accent = "en-gb-x-rp" if condition.voice == "heart" and condition.accent == "en-gb" else condition.accent
        new = (condition.voice, accent) not in recipe or outside_speakers or condition.snr_db is not None
        assert new, condition.name
    defaults = gen.conditions.select_conditions(gen.conditions.DEFAULT_CONDITIONS)
    assert defaults[0].is_control and {c.voice for c in defaults} == {"joe", "heart"}
    assert any(c.snr_db is not None for c in defaults) and any(c.tempo != 1.0 for c in defaults)


def test_condition_checks(gen) -> None:
    Condition = gen.conditions.Condition
    with pytest.raises(ValueError, match="voice must be joe or heart"):
        Condition("x", "alice", "en-us")
    with pytest.raises(ValueError, match="tempo and pitch"):
        Condition("x", "joe", "en-us", tempo=3.0)
    with pytest.raises(ValueError, match="hibari reads"):
        Condition("x", "heart", "en-029")
    with pytest.raises(ValueError, match="unknown condition.*nope"):
        gen.conditions.select_conditions(["us-control", "nope"])
    with pytest.raises(ValueError, match="twice"):
        gen.conditions.select_conditions(["us-control", "us-control"])


def test_finish_adds_noise_at_the_asked_snr_and_pads(gen) -> None:
    rate = gen.conditions.SAMPLE_RATE
    t = np.arange(rate) / rate
    speech = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)      # power 0.045
    clean = gen.conditions.finish(speech, None, seed=1)
    edge = int(0.15 * rate)
    assert clean.size == speech.size + 2 * edge and np.all(clean[:edge] == 0)
    assert np.max(np.abs(clean)) == pytest.approx(0.9, abs=1e-6)
    noisy = gen.conditions.finish(speech, 10.0, seed=1)
    # the edges hold only noise; speech power / noise power = 10^(10/10), both after the same peak scaling
    noise_power = np.mean(np.square(noisy[:edge].astype(np.float64)))
    speech_power = np.mean(np.square(noisy[edge:-edge].astype(np.float64))) - noise_power
    assert speech_power / noise_power == pytest.approx(10.0, rel=0.15)
    assert np.array_equal(noisy, gen.conditions.finish(speech, 10.0, seed=1))
    assert not np.array_equal(noisy, gen.conditions.finish(speech, 10.0, seed=2))
    assert gen.conditions.noise_sigma(1.0, 20.0) == pytest.approx(0.1)


# ---- prompts and pools ------------------------------------------------------------------------------------

def test_generator_prompts_avoid_the_benchmark_and_follow_the_seed(gen, corpus) -> None:
    exclude = set(corpus.benchmark)
    assert len(corpus.benchmark) == 362 and len(corpus.teacher) == 1720   # 330 pool + 40 demo (8 shared)
    prompts = gen.pools.generator_prompts(40, 12, exclude)
    assert len(prompts) == 40 and len({p.text for p in prompts}) == 40
    assert not {p.text for p in prompts} & exclude
    assert [p.text for p in prompts] == [p.text for p in gen.pools.generator_prompts(40, 12, exclude)]
    assert [p.text for p in prompts] != [p.text for p in gen.pools.generator_prompts(40, 13, exclude)]
    assert len({p.domain for p in prompts}) == 9                           # every domain of the generator
    sets = {corpus.prompt_set(p) for p in prompts}
    assert sets == {"teacher-text", "new"}      # generator prompts only use the generator's words


def test_pool_prompts_are_tagged_by_the_teacher_text(gen, corpus) -> None:
    conditions = gen.conditions.select_conditions(["us-control"])
    prompts = gen.pools.generator_prompts(30, 12, set(corpus.benchmark))
    plan = gen.pools.plan_pool("generator", prompts, conditions, 0.1, 12, corpus)
    assert plan.prompt_sets == {p.id: corpus.prompt_set(p) for p in prompts}
    unseen = gen.pools.unseen_word_prompts(4, set(corpus.train_words), set(corpus.benchmark | corpus.teacher))
    assert [corpus.prompt_set(p) for p in unseen] == ["new-words-command", "new-words-sentence"] * 2
    item = plan.items[0]
    ref = gen.pools.reference(plan, item, 16000)
    assert ref["text"] == item.prompt.text and ref["duration"] == 1.0
    assert ref["custom"] == {"accent": "us-control", "voice": "joe", "prompt": item.prompt.id,
                             "domain": item.prompt.domain, "prompt_set": plan.prompt_sets[item.prompt.id]}


def test_unseen_word_prompts_hold_words_the_teacher_never_heard(gen, corpus) -> None:
    exclude, train_words = set(corpus.benchmark | corpus.teacher), set(corpus.train_words)
    prompts = gen.pools.unseen_word_prompts(21, train_words, exclude)
    assert len(prompts) == 21 and len({p.text for p in prompts}) == 21
    assert all(any(w not in train_words for w in p.text.split()) for p in prompts)
    assert not {p.text for p in prompts} & exclude
    kinds = [p.domain == "unseen-passage" for p in prompts]
    assert kinds[:4] == [False, True, False, True] and sum(kinds) == 10  # alternating, the odd one a command
    assert gen.pools.passage_overlap(prompts) == 0
    assert 0 < gen.pools.out_of_vocabulary_rate(prompts, train_words) < 1
    with pytest.raises(ValueError, match="prompts, not"):
        gen.pools.unseen_word_prompts(10_000, train_words, exclude)
    # a 'training text' that holds every word leaves nothing unseen
    everything = {w for p in prompts for w in p.text.split()} | train_words
    with pytest.raises(ValueError, match="no word outside"):
        gen.pools.unseen_word_prompts(4, everything | {w for s in gen.pools.passage_sentences()
                                                       for w in s.lower().replace(",", "").replace(".", "").split()},
                                      exclude)


def test_pool_plan_reads_every_prompt_in_every_condition(gen, corpus) -> None:
    exclude = set(corpus.benchmark)
    conditions = gen.conditions.select_conditions(["us-control", "en-us-nyc", "us-noisy"])
    prompts = gen.pools.generator_prompts(20, 12, exclude)
    plan = gen.pools.plan_pool("generator", prompts, conditions, 0.1, seed=12)
    assert len(plan.items) == 60 and len({i.cut_id for i in plan.items}) == 60
    readings = {(i.prompt.id, i.accent) for i in plan.items}
    assert readings == {(p.id, c.name) for p in prompts for c in conditions}
    for condition in conditions:
        ids = {i.cut_id for i in plan.items if i.accent == condition.name}
        assert len(ids & plan.annotated) == 2          # round(0.1 x 20)
    assert all(i.prompt.id not in i.cut_id and i.cut_id.startswith("gen-generator-") for i in plan.items)
    again = gen.pools.plan_pool("generator", prompts, conditions, 0.1, seed=12)
    assert again.annotated == plan.annotated
    assert gen.pools.annotated_ids(list(plan.items), 0.0, 12) == frozenset()
    tiny = gen.pools.annotated_ids(list(plan.items), 0.01, 12)
    assert len(tiny) == 3                               # at least one per condition
    with pytest.raises(ValueError, match="annotated fraction"):
        gen.pools.annotated_ids(list(plan.items), 1.0, 12)


def test_plan_pools_sizes(gen) -> None:
    conditions = gen.conditions.select_conditions(gen.conditions.DEFAULT_CONDITIONS)
    pools = gen.pools.plan_pools(conditions, 50, 50, 0.1, 12, 12)
    assert [p.name for p in pools] == ["generator", "unseen-words"]
    assert [len(p.items) for p in pools] == [300, 300] and [len(p.annotated) for p in pools] == [30, 30]
    assert [p.name for p in gen.pools.plan_pools(conditions, 0, 5, 0.1, 12, 12)] == ["unseen-words"]
    with pytest.raises(ValueError, match="no pool"):
        gen.pools.plan_pools(conditions, 0, 0, 0.1, 12, 12)


# ---- slices from report.json ------------------------------------------------------------------------------

def _cut(cut_id: str, accent: str, teacher: str, label: str, confidence: float) -> MonoCut:
    custom = {"accent": accent, "nbest": [{"text": teacher, "tokens": [], "score": 0.0}],
              "choral": [{"text": label, "confidence": confidence, "teacher_text": teacher, "source": "propagated"}]}
    supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=1.0, text=None)
    return MonoCut(id=cut_id, start=0.0, duration=1.0, channel=0, supervisions=[supervision], custom=custom)


@pytest.fixture()
def report(tmp_path: Path) -> dict:
    """Two conditions, hand-countable: a (2 cuts, 6 words) and b (2 cuts, 4 words)."""
    cuts = [_cut("a1", "a", "x y q", "x y z", 0.95),   # ref x y z: teacher 1, choral 0 (helped, correct)
            _cut("a2", "a", "p q r", "p q s", 0.85),   # ref p q r: teacher 0, choral 1 (harmed, wrong)
            _cut("b1", "b", "m n", "m n", 0.35),       # ref m o:   both 1 error (wrong)
            _cut("b2", "b", "k", "k l", 0.85)]         # ref k l:   teacher 1, choral 0 (helped, correct)
    rescored = tmp_path / "rescored.jsonl.gz"
    write_cuts(cuts, rescored)
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(
        json.dumps(SupervisionSegment(id=i, recording_id=i, start=0.0, duration=1.0, text=t).to_dict()) + "\n"
        for i, t in {"a1": "x y z", "a2": "p q r", "b1": "m o", "b2": "k l"}.items()))
    return evaluate(rescored, refs, by=["accent"]).to_dict()


def test_condition_slices_count_exactly(gen, report: dict) -> None:
    slices = gen.results.condition_slices(report)
    a, b = slices["a"], slices["b"]
    assert (a.n_cuts, a.n_words, dict(a.errors)) == (2, 6, {"teacher": 1, "choral": 1, "oracle": 1})
    assert (b.n_cuts, b.n_words, dict(b.errors)) == (2, 4, {"teacher": 2, "choral": 1, "oracle": 2})
    assert (a.n_helped, a.n_harmed, b.n_helped, b.n_harmed) == (1, 1, 1, 0)
    assert a.excess == 0.0 and b.reduction == pytest.approx(0.5)
    assert a.ece == pytest.approx(report["unannotated"]["breakdown"]["accent"]["a"]["ece"])
    merged = a + b
    # bins: 0.3 -> [0.35 wrong]; 0.8 -> [0.85 wrong, 0.85 right]; 0.9 -> [0.95 right]
    # ECE = (|0 - 0.35| + |1 - 1.7| + |1 - 0.95|) / 4 = (0.35 + 0.7 + 0.05) / 4
    assert merged.ece == pytest.approx(1.1 / 4)
    assert merged.ece == pytest.approx(report["unannotated"]["ece"])
    assert merged.help_rate == pytest.approx(0.5) and merged.harm_rate == pytest.approx(0.25)
    overall = gen.results.overall_slice(report)
    assert overall.errors == merged.errors and overall.n_words == merged.n_words
    assert gen.results.mean_reduction(slices, control="a") == pytest.approx(0.5)


# ---- leave one condition out ------------------------------------------------------------------------------

def _slice(gen, teacher: int, choral: int, words: int = 100):
    return gen.results.Slice(n_cuts=10, n_words=words, errors={"teacher": teacher, "choral": choral, "oracle": 0})


def test_loco_runs_and_candidates(gen) -> None:
    keys = list(gen.loco.loco_runs(["p", "q"], ["c1", "c2", "c3"], ["config", "no-tune"]))
    assert len(keys) == 2 * 2 * 4 and len(set(keys)) == len(keys)
    assert keys[0] == gen.loco.RunKey("p", "config", None) and keys[1].slug == "config/without-c1"
    assert [c.name for c in gen.loco.select_candidates(["no-tune", "config", "no-tune"])] == ["no-tune", "config"]
    with pytest.raises(ValueError, match="unknown candidate"):
        gen.loco.select_candidates(["best"])
    with pytest.raises(ValueError, match="needs tune on"):
        gen.loco.Candidate("x", tune=False, fusion_weight=(0.1,))


def test_selection_rule(gen) -> None:
    Score = gen.loco.Score
    safe_low = Score("a", True, 0.05, 0.0, 4)
    unsafe_high = Score("b", False, 0.40, 0.01, 4)
    safe_high = Score("c", True, 0.10, -0.01, 4)
    assert gen.loco.select([safe_low, unsafe_high]).candidate == "a"            # safety first
    assert gen.loco.select([safe_low, unsafe_high, safe_high]).candidate == "c"
    assert gen.loco.select([safe_low, Score("d", True, 0.05, 0.0, 4)]).candidate == "a"   # tie -> first
    assert gen.loco.select([unsafe_high, Score("e", False, 0.0, 0.003, 4)]).candidate == "e"  # least excess
    rows = [("control", _slice(gen, 10, 11)), ("x", _slice(gen, 20, 10)), ("y", _slice(gen, 40, 40))]
    score = gen.loco.score("k", rows, control="control")
    # control +1 point is unsafe; mean reduction over x (50%) and y (0%)
    assert not score.safe and score.worst_excess == pytest.approx(0.01)
    assert score.mean_reduction == pytest.approx(0.25)


def test_leave_one_out_selects_without_the_held_out_condition(gen) -> None:
    RunKey = gen.loco.RunKey
    full = {"control": _slice(gen, 10, 10), "x": _slice(gen, 20, 15), "y": _slice(gen, 40, 38)}
    tuned_full = {"control": _slice(gen, 10, 10), "x": _slice(gen, 20, 12), "y": _slice(gen, 40, 30)}
    results = {
        RunKey("p", "config", None): full,
        RunKey("p", "config", "x"): {"control": _slice(gen, 10, 10), "y": _slice(gen, 40, 38)},
        RunKey("p", "config", "y"): {"control": _slice(gen, 10, 10), "x": _slice(gen, 20, 19)},
        RunKey("p", "low", None): tuned_full,
        # without x: low helps y but hurts the control -> unsafe; config wins
        RunKey("p", "low", "x"): {"control": _slice(gen, 10, 12), "y": _slice(gen, 40, 20)},
        # without y: low is safe and better on x -> low wins
        RunKey("p", "low", "y"): {"control": _slice(gen, 10, 10), "x": _slice(gen, 20, 10)},
    }
    outcomes = gen.loco.leave_one_out(results, ["x", "y"], ["config", "low"], control="control")
    by_name = {o.held_out: o for o in outcomes}
    assert by_name["x"].chosen == "config" and by_name["y"].chosen == "low"
    assert by_name["x"].evaluated["p"] is full["x"] and by_name["y"].evaluated["p"] is tuned_full["y"]
    assert by_name["y"].default["p"] is full["y"]
    leaky = dict(results)
    leaky[RunKey("p", "config", "x")] = full
    with pytest.raises(ValueError, match="still holds the held-out condition x"):
        gen.loco.leave_one_out(leaky, ["x"], ["config", "low"], control="control")


# ---- RESULTS.md ---------------------------------------------------------------------------------------------

def test_results_rendering(gen) -> None:
    conditions = gen.conditions.select_conditions(["us-control", "en-us-nyc"])
    pool = gen.report.PoolResult(
        "generator", 20, 0.0, {"us-control": _slice(gen, 10, 12), "en-us-nyc": _slice(gen, 30, 24)},
        {"us-control": 2, "en-us-nyc": 2}, {"threshold": 71.5, "rule": "annotated", "n_pairs": 3, "n_positive": 3},
        {"alpha": 0.9}, 12.0)
    other = gen.report.PoolResult("unseen-words", 20, 0.5, {"us-control": _slice(gen, 20, 20),
                                                            "en-us-nyc": _slice(gen, 50, 50)},
                                  {"us-control": 2, "en-us-nyc": 2}, {}, {}, 10.0)
    RunKey = gen.loco.RunKey
    results = {}
    for p in (pool, other):
        for candidate in ("config", "no-tune"):
            results[RunKey(p.name, candidate, None)] = p.slices
            for held in p.slices:
                results[RunKey(p.name, candidate, held)] = {k: v for k, v in p.slices.items() if k != held}
    loco = gen.loco.leave_one_out(results, ["us-control", "en-us-nyc"], ["config", "no-tune"], "us-control")
    text = gen.report.render(command="run_protocol.py --prompts 20", config="configs/demo.yaml",
                             settings=["pools: two"], conditions=conditions, pools=[pool, other],
                             control="us-control", loco=loco,
                             candidates=gen.loco.select_candidates(["config", "no-tune"]))
    assert "Produced by `run_protocol.py --prompts 20`" in text and "- pools: two" in text
    # control: 10 -> 12 errors of 100 words: 2 points worse, marked
    assert ("| us-control (control) | 10 | 2 | 10.00% | 12.00% (worse) | 0.00% | -20.00% | 0.00% | 0.00% | - | "
            "3 / 3 (annotated) |") in text
    assert "| en-us-nyc | 10 | 2 | 30.00% | 24.00% | 0.00% | 20.00% |" in text
    assert "| **overall** | 20 | 4 | 20.00% | 18.00% |" in text
    assert "### All pools together" in text and "| en-us-nyc | 20 | 4 | 40.00% | 37.00% |" in text
    assert "mean relative WER reduction over the 1 non-control conditions **7.50%**" in text  # (80-74)/80
    assert "us-control choral - teacher = +1.00 points" in text
    assert "## Leave-one-condition-out" in text and "| en-us-nyc | config" in text
    assert "Graph threshold 71.5; tuned: alpha 0.9" in text and "not tuned (config values)" in text


# ---- the pool's run config --------------------------------------------------------------------------------

def test_pool_config_keeps_the_base_settings_and_points_at_the_pool(gen, tmp_path: Path) -> None:
    import run_protocol

    from choral.pipeline.run_config import load_run_config

    cuts, references = tmp_path / "cuts.jsonl.gz", tmp_path / "references.jsonl.gz"
    cuts.write_bytes(b""), references.write_bytes(b"")
    base = run_protocol.REPO / "configs" / "demo.yaml"
    path = run_protocol.pool_config(base, tmp_path / "run", cuts, references, tmp_path / "run" / "config.yaml")
    config, demo = load_run_config(path), load_run_config(base)
    assert config.run_dir == tmp_path / "run" and config.input.source == cuts
    assert config.eval.references == references and config.eval.by == ("accent", "prompt_set")
    assert (config.decode, config.graph, config.tune, config.propagate) == (demo.decode, demo.graph, demo.tune,
                                                                            demo.propagate)
    assert config.teacher == demo.teacher == "default"


# ---- ablations (issue 12 part 4) -----------------------------------------------------------------------------

def test_ablation_methods_are_candidates_that_change_one_thing(gen) -> None:
    from choral.pipeline.graph import GraphConfig
    from choral.pipeline.group import GroupingConfig
    from choral.pipeline.propagate import PropagateConfig
    from choral.pipeline.tune import TuneConfig

    for name in gen.loco.ABLATIONS:
        method = gen.loco.CANDIDATES[name]
        assert method.tune and method.fusion_weight is None and name not in gen.loco.DEFAULT_CANDIDATES
        PropagateConfig(**dict(method.propagate))      # every override is a valid propagate setting
        GroupingConfig(**dict(method.group))           # ... and group setting
        GraphConfig(**dict(method.graph))              # ... and graph setting
        TuneConfig(nearest=method.nearest)
    assert dict(gen.loco.CANDIDATES["no-isolated"].graph) == {"isolated_reach": 0.0}


def test_ablation_verdict_follows_the_loco_criteria(gen) -> None:
    verdict = gen.loco.ablation_verdict
    base = {"p": {"control": _slice(gen, 10, 10), "x": _slice(gen, 20, 15)}}
    better = {"p": {"control": _slice(gen, 10, 10), "x": _slice(gen, 20, 10)}}
    v = verdict("m", better, base, "control")
    assert v.helps and v.mean_reduction == pytest.approx(0.5) and v.baseline_reduction == pytest.approx(0.25)
    unsafe = {"p": {"control": _slice(gen, 10, 11), "x": _slice(gen, 20, 5)}}
    assert not verdict("m", unsafe, base, "control").helps
    assert "unsafe" in verdict("m", unsafe, base, "control").reason
    harmful = {"p": {"control": _slice(gen, 10, 10), "x": gen.results.Slice(
        n_cuts=10, n_words=100, errors={"teacher": 20, "choral": 10, "oracle": 0}, n_harmed=1)}}
    assert verdict("m", harmful, base, "control").reason == "raises the harm rate"
    assert verdict("m", base, base, "control").reason == "no gain in mean reduction"


def test_ablation_section_rendering(gen) -> None:
    conditions = gen.conditions.select_conditions(["us-control", "en-us-nyc"])
    base_runs = {"p": {"us-control": _slice(gen, 10, 10), "en-us-nyc": _slice(gen, 30, 24)}}
    method_runs = {"p": {"us-control": _slice(gen, 10, 10), "en-us-nyc": _slice(gen, 30, 21)}}
    config, method = gen.loco.CANDIDATES["config"], gen.loco.CANDIDATES["consensus"]
    ablations = [gen.report.AblationResult(config, base_runs, {"p": 3.0}, None),
                 gen.report.AblationResult(method, method_runs, {"p": 5.0},
                                           gen.loco.ablation_verdict("consensus", method_runs, base_runs,
                                                                     "us-control"))]
    pool = gen.report.PoolResult("p", 20, 0.0, base_runs["p"], {}, {}, {}, 3.0)
    text = gen.report.render(command="x", config="c", settings=[], conditions=conditions, pools=[pool],
                             control="us-control", ablations=ablations)
    assert "## Ablations (issue 12 part 4)" in text
    assert "| `consensus` | 30.00% / 15.50% / 0.00% / 0.00% | 30.00% | 0.00% | +0.00 | - | 5 | **helps**: " in text
    assert "| `config` | 20.00% / 17.00% / 0.00% / 0.00% |" in text and "| baseline |" in text
    assert "| en-us-nyc | 30.00% | 0.00% | 24.00% (0.00% / 0.00%) | 21.00% (0.00% / 0.00%) |" in text
