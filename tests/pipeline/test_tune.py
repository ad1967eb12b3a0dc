import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from choral.pipeline.errors import InputError
from choral.pipeline.graph import build_graph
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import read_cuts
from choral.pipeline.propagate import PropagateConfig, load_params, propagate_manifest
from choral.pipeline.propagate.calibrate import ANSWER_PRIOR, PRIOR
from choral.pipeline.synthetic import SyntheticConfig, generate
from choral.pipeline.text import TextNormalizer
from choral.pipeline.tune import TuneConfig, parse_grid, report_path, tune_params, tune_stage


def test_tune_writes_params_propagate_accepts(tmp_path: Path) -> None:
    corpus = generate(tmp_path, SyntheticConfig(n_prompts=25, annotated_fraction=0.3, seed=2))
    group_manifest(corpus.decoded, tmp_path / "grouped.jsonl.gz")
    build_graph(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz")
    grid = TuneConfig(alpha=(0.5, 0.9), fusion_weight=(0.3, 0.7), temperature=(1.0,), threshold_scale=(1.0,))
    summary = tune_params(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz", tmp_path / "params.yaml",
                          grid=grid, folds=3)
    assert summary.n_combinations == 4 and summary.folds == 3
    assert summary.best_wer <= summary.teacher_wer
    params = load_params(tmp_path / "params.yaml")
    assert params.alpha in (0.5, 0.9) and params.fusion_weight in (0.3, 0.7)
    assert "propagate" in yaml.safe_load((tmp_path / "params.yaml").read_text())
    curve = summary.confidence_curve
    assert curve[0]["min_confidence"] == 0.0 and curve[0]["kept_fraction"] == pytest.approx(1.0)
    kept = [point["kept_cuts"] for point in curve]
    assert kept == sorted(kept, reverse=True)
    assert (tmp_path / "params.json").exists()


def test_tune_needs_annotated_cuts(tmp_path: Path) -> None:
    corpus = generate(tmp_path, SyntheticConfig(n_prompts=5, annotated_fraction=0.0, seed=2))
    group_manifest(corpus.decoded, tmp_path / "grouped.jsonl.gz")
    build_graph(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz")
    with pytest.raises(InputError, match="at least 2 annotated cuts"):
        tune_params(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz", tmp_path / "params.yaml")
    assert not (tmp_path / "params.yaml").exists()


def test_parse_grid() -> None:
    assert parse_grid({"alpha": "0.1, 0.2", "temperature": None}).alpha == (0.1, 0.2)
    with pytest.raises(Exception, match="comma-separated"):
        parse_grid({"alpha": "a,b"})


def test_tune_scores_borrowed_candidates_of_held_out_cuts_only(tmp_path: Path) -> None:
    corpus = generate(tmp_path, SyntheticConfig(n_prompts=20, annotated_fraction=0.3, seed=3))
    group_manifest(corpus.decoded, tmp_path / "grouped.jsonl.gz")
    build_graph(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz")
    annotated = {c.id for c in read_cuts(tmp_path / "grouped.jsonl.gz") if any(s.text for s in c.supervisions)}
    asked: list[str] = []

    def scorer(cut_id: str, texts: list[str]) -> list[float]:
        asked.append(cut_id)
        return [-1.0] * len(texts)  # borrowed texts look as likely as a typical 1-best

    grid = TuneConfig(alpha=(0.9,), fusion_weight=(0.0, 0.5), temperature=(1.0,), threshold_scale=(1.0,))
    with_scorer = tune_params(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz", tmp_path / "a.yaml",
                              grid=grid, folds=3, scorer=scorer)
    without = tune_params(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz", tmp_path / "b.yaml",
                          grid=grid, folds=3)
    assert asked and set(asked) <= annotated  # only held-out (annotated) cuts are decided while tuning
    assert with_scorer.teacher_wer == without.teacher_wer
    assert with_scorer.best_wer <= without.best_wer + 0.05


# --- the stage: skip, force, sidecar, the untuned case ------------------------------------------------------------
SMALL_GRID = TuneConfig(alpha=(0.5, 0.9), fusion_weight=(0.3,), temperature=(1.0,), threshold_scale=(1.0,), folds=2,
                        min_annotated=2)


def grouped_and_graph(tmp_path: Path, annotated_fraction: float, n_prompts: int = 12) -> tuple[Path, Path]:
    corpus = generate(tmp_path, SyntheticConfig(n_prompts=n_prompts, annotated_fraction=annotated_fraction, seed=2))
    group_manifest(corpus.decoded, tmp_path / "grouped.jsonl.gz")
    build_graph(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz")
    return tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz"


def test_tune_stage_skips_when_up_to_date_and_redoes_when_forced_or_changed(tmp_path: Path) -> None:
    grouped, graph = grouped_and_graph(tmp_path, 0.3)
    params = tmp_path / "params.yaml"
    first = tune_stage(grouped, graph, params, grid=SMALL_GRID)
    assert not first.skipped and not first.untuned and first.tuned is not None and first.n_annotated >= 2
    assert load_params(params) == first.tuned.best and report_path(params) == tmp_path / "params.json"
    written = params.stat().st_mtime_ns
    again = tune_stage(grouped, graph, params, grid=SMALL_GRID)
    assert again.skipped and again.tuned is None and not again.untuned and params.stat().st_mtime_ns == written
    assert not tune_stage(grouped, graph, params, grid=SMALL_GRID, force=True).skipped
    assert not tune_stage(grouped, graph, params, grid=replace(SMALL_GRID, seed=1)).skipped
    assert not tune_stage(grouped, graph, params, grid=replace(SMALL_GRID, seed=1),
                          base=PropagateConfig(alpha=0.5)).skipped


def test_tune_stage_sidecar_keeps_the_run_dirs_format(tmp_path: Path) -> None:
    """What `choral run` recorded before tune was a stage of its own, so existing run directories still skip."""
    grouped, graph = grouped_and_graph(tmp_path, 0.3)
    params = tmp_path / "params.yaml"
    tune_stage(grouped, graph, params, grid=SMALL_GRID, base=PropagateConfig(alpha=0.5))
    meta = json.loads((tmp_path / "params.yaml.meta.json").read_text())
    assert meta["stage"] == "tune"
    assert meta["outputs"] == [str(params.resolve()), str((tmp_path / "params.json").resolve())]
    assert meta["params"] == {"grid": {"alpha": [0.5, 0.9], "fusion_weight": [0.3], "temperature": [1.0],
                                       "threshold_scale": [1.0]},
                              "base": json.loads(json.dumps(asdict(PropagateConfig(alpha=0.5)))),
                              "folds": 2, "seed": 0, "selection": "one-se", "calibrate": True,
                              "calibration_strength": 0.25, "calibration_fit": "scale", "calibration_min_each": 3,
                              "answer_strength": 1.0, "min_annotated": 2,
                              "normalizer": asdict(TextNormalizer()), "scorer": None}


def test_tune_stage_below_two_annotated_cuts_writes_the_base_values_untuned(tmp_path: Path) -> None:
    grouped, graph = grouped_and_graph(tmp_path, 0.0, n_prompts=5)
    params = tmp_path / "params.yaml"
    base = PropagateConfig(alpha=0.5, fusion_weight=0.2)
    summary = tune_stage(grouped, graph, params, base=base, grid=SMALL_GRID, base_origin="the test")
    assert summary.untuned and not summary.skipped and summary.tuned is None and summary.n_annotated == 0
    assert load_params(params) == base
    text = params.read_text()
    assert text.startswith(f"# not tuned: {grouped} holds 0 annotated cut(s), tuning needs 2\n"
                           "# these are the propagate values of the test\n")
    assert json.loads((tmp_path / "params.json").read_text()) == {
        "best": json.loads(json.dumps(asdict(base))), "tuned": False, "n_annotated": 0}
    assert tune_stage(grouped, graph, params, base=base, grid=SMALL_GRID).skipped
    # and propagate accepts them
    propagated = propagate_manifest(grouped, graph, tmp_path / "rescored.jsonl.gz", load_params(params))
    assert propagated.n_cuts > 0


def test_tune_stage_with_an_anonymous_scorer_always_runs(tmp_path: Path) -> None:
    grouped, graph = grouped_and_graph(tmp_path, 0.3)

    def scorer(cut_id: str, texts: list[str]) -> list[float]:
        return [-1.0] * len(texts)

    assert not tune_stage(grouped, graph, tmp_path / "params.yaml", grid=SMALL_GRID, scorer=scorer).skipped
    assert not tune_stage(grouped, graph, tmp_path / "params.yaml", grid=SMALL_GRID, scorer=scorer).skipped


def test_tune_bounds_its_work_on_a_large_pool(tmp_path: Path) -> None:
    """Above max_cuts, tune samples whole annotated groups and searches coarse to fine."""
    corpus = generate(tmp_path, SyntheticConfig(n_prompts=40, annotated_fraction=0.3, seed=4))
    group_manifest(corpus.decoded, tmp_path / "grouped.jsonl.gz")
    build_graph(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz")
    grid = TuneConfig(fusion_weight=(0.0, 0.3))
    full = tune_params(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz", tmp_path / "full.yaml", grid=grid,
                       folds=3)
    bounded = tune_params(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz", tmp_path / "params.yaml",
                          grid=grid, folds=3, max_cuts=200)
    report = json.loads((tmp_path / "params.json").read_text())
    assert json.loads((tmp_path / "full.json").read_text())["search"] == "full"
    search = report["search"]
    assert 0 < search["sampled_cuts"] <= 200
    assert search["solved_points"] < search["grid_points"] == 27
    assert len(report["grid"]) == 2 * search["solved_points"]
    assert bounded.best_wer <= bounded.teacher_wer and full.best_wer <= full.teacher_wer


def test_sample_groups_keeps_whole_groups() -> None:
    from types import SimpleNamespace

    from choral.pipeline.tune.crossval import sample_groups

    entries = [SimpleNamespace(group=f"g{i // 10}") for i in range(100)]
    rows = np.arange(100)
    kept, sampled = sample_groups(entries, rows, 35, seed=0)
    assert sampled and len(kept) == 30
    groups = {entries[i].group for i in kept}
    assert all(sum(e.group == g for e in (entries[i] for i in kept)) == 10 for g in groups)
    everything, sampled = sample_groups(entries, rows, 100, seed=0)
    assert not sampled and np.array_equal(everything, rows)


def test_one_se_rule_keeps_the_base_values_unless_clearly_worse() -> None:
    from choral.pipeline.tune.crossval import select_key

    default = (1.0, 0.9, 1.0, 0.3)
    other = (1.25, 0.99, 2.0, 0.5)
    # few cuts: the other point saves one word on one cut; noise, so the base values stay
    noisy = {default: np.array([1.0, 0.0, 2.0, 0.0]), other: np.array([0.0, 0.0, 2.0, 0.0])}
    assert select_key(noisy, default, "one-se") == (default, other)
    assert select_key(noisy, default, "min") == (other, other)
    # many cuts, consistently better: the other point wins
    clear = {default: np.ones(50), other: np.zeros(50)}
    assert select_key(clear, default, "one-se")[0] == other


def test_tune_stage_below_min_annotated_holds_the_base_values_and_fits_the_calibration(tmp_path: Path) -> None:
    """A few annotated cuts (fewer than ``min_annotated``) cannot tell the grid apart: the base values hold,
    only the calibration (two numbers by default) is fitted on them."""
    grouped, graph = grouped_and_graph(tmp_path, 0.3)
    n = sum(any(s.text for s in c.supervisions) for c in read_cuts(grouped))
    assert 2 <= n
    params = tmp_path / "params.yaml"
    prior = tuple(round(0.8 * b, 6) for b in PRIOR)   # a user's own prior: tune adapts it and keeps it
    base = PropagateConfig(alpha=0.5, fusion_weight=0.2, calibration=prior)
    grid = replace(SMALL_GRID, alpha=(0.5, 0.9, 0.99), fusion_weight=(0.0, 0.2, 0.7), min_annotated=n + 1)
    held = tune_stage(grouped, graph, params, base=base, grid=grid)
    assert held.tuned is not None and held.tuned.n_combinations == 1 and held.n_annotated == n
    chosen = load_params(params)
    assert replace(chosen, calibration=base.calibration, prior_calibration=base.prior_calibration,
                   answer_calibration=base.answer_calibration) == base
    assert chosen.prior_calibration == prior != chosen.calibration   # the floor of the decision reads both
    report = json.loads((tmp_path / "params.json").read_text())
    assert report["calibration"]["fitted"] and report["calibration"]["fit"] == "scale"
    assert len(report["grid"]) == 1
    # scale: the chosen coefficients are a * prior + b * bias
    ratio = np.asarray(chosen.calibration[1:]) / np.asarray(base.calibration[1:])
    assert np.allclose(ratio, ratio[0], atol=1e-4) and ratio[0] > 0
    searched = tune_stage(grouped, graph, params, base=base, grid=replace(grid, min_annotated=n))
    assert searched.tuned is not None and searched.tuned.n_combinations == 9


def test_tune_config_min_annotated_and_calibration_fit_are_checked() -> None:
    with pytest.raises(Exception, match="min_annotated"):
        TuneConfig(min_annotated=1)
    with pytest.raises(Exception, match="calibration_fit"):
        TuneConfig(calibration_fit="other")  # type: ignore[arg-type]


@pytest.mark.parametrize("text, message", [
    ("max_cuts: 0", "key 'tune.max_cuts' must be a positive number of cuts, not 0"),
    ("sample_cuts: -5", "key 'tune.sample_cuts' must be a positive number of cuts, not -5"),
    ("max_cuts: 500\n  sample_cuts: 600", "key 'tune.sample_cuts' must be at most max_cuts (500), not 600"),
    ("max_cuts: many", "key 'tune.max_cuts' must be int"),
])
def test_tune_bounds_are_validated_config_keys(tmp_path: Path, text: str, message: str) -> None:
    from choral.pipeline.run_config import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text(f"input:\n  audio_dir: audio\ntune:\n  {text}\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_run_config(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    path.write_text("input:\n  audio_dir: audio\ntune:\n  max_cuts: 5000\n  sample_cuts: 2000\n", encoding="utf-8")
    config = load_run_config(path).tune
    assert (config.max_cuts, config.sample_cuts) == (5000, 2000)
    assert (TuneConfig().max_cuts, TuneConfig().sample_cuts) == (3000, 1000)


def test_choose_groups_samples_below_the_full_search_bound() -> None:
    """Up to max_cuts every group is searched; above it whole groups up to sample_cuts, the draw
    sample_groups makes over the same cuts."""
    from types import SimpleNamespace

    from choral.pipeline.tune.crossval import choose_groups, sample_groups

    sizes = {f"g{i}": 10 for i in range(10)}
    chosen, sampled = choose_groups(sizes, 100, seed=0, sample_cuts=35)
    assert not sampled and chosen == set(sizes)
    chosen, sampled = choose_groups(sizes, 99, seed=0, sample_cuts=35)
    assert sampled and len(chosen) == 3 and chosen < set(sizes)
    entries = [SimpleNamespace(group=f"g{i // 10}") for i in range(100)]
    kept, sampled = sample_groups(entries, np.arange(100), 99, seed=0, sample_cuts=35)
    assert sampled and {entries[i].group for i in kept} == chosen and len(kept) == 30
    assert choose_groups(sizes, 99, seed=0)[0] != chosen      # without sample_cuts: up to max_cuts
    assert sum(sizes[g] for g in choose_groups(sizes, 99, seed=0)[0]) == 90


def test_tune_reads_only_the_sampled_groups(tmp_path: Path) -> None:
    """The census pass counts what the stage needs; the search reads the sampled groups' cuts and the graph
    over them, the same entries and edges as the annotated groups' graph restricted to them."""
    from choral.pipeline.propagate import read_grouped_and_graph
    from choral.pipeline.tune.crossval import choose_groups, read_census

    corpus = generate(tmp_path, SyntheticConfig(n_prompts=40, annotated_fraction=0.3, seed=4))
    grouped, graph_file = tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz"
    group_manifest(corpus.decoded, grouped)
    build_graph(grouped, graph_file)
    normalizer = TextNormalizer()
    cuts = read_cuts(grouped)
    census = read_census(grouped)
    assert census.n_annotated == sum(any(s.text for s in c.supervisions) for c in cuts)
    everything, whole = read_grouped_and_graph(grouped, graph_file, normalizer, annotated_groups_only=True)
    assert sum(census.sizes.values()) == len(everything) and set(census.sizes) == {e.group for e in everything}
    chosen, sampled = choose_groups(census.sizes, 200, seed=0, sample_cuts=120)
    assert sampled and 0 < sum(census.sizes[g] for g in chosen) <= 120
    entries, graph = read_grouped_and_graph(grouped, graph_file, normalizer, groups=chosen)
    rows = np.array([i for i, e in enumerate(everything) if e.group in chosen])
    assert [e.cut_id for e in entries] == [everything[i].cut_id for i in rows]
    assert (graph.adjacency(weighted=True) != whole.adjacency(weighted=True)[rows][:, rows]).nnz == 0
    grid = replace(TuneConfig(fusion_weight=(0.0, 0.3)), max_cuts=200, sample_cuts=120)
    tune_params(grouped, graph_file, tmp_path / "params.yaml", grid=grid, folds=3)
    assert json.loads((tmp_path / "params.json").read_text())["search"]["sampled_cuts"] == len(entries)


def test_tune_rescales_the_answer_model_on_held_out_answers_and_keeps_the_labels(tmp_path: Path) -> None:
    """By default tune rescales the answer model (``ANSWER_PRIOR``) on the held-out answers (their features and
    exactness in params.json); strength 0 keeps the prior, an empty answer model writes the decision's p. The
    labels propagate writes are the same every way, the confidences are not."""
    grouped, graph = grouped_and_graph(tmp_path, 0.3)
    on, kept, none = tmp_path / "on.yaml", tmp_path / "kept.yaml", tmp_path / "none.yaml"
    tune_params(grouped, graph, on, grid=SMALL_GRID)
    tune_params(grouped, graph, kept, grid=replace(SMALL_GRID, answer_strength=0.0))
    tune_params(grouped, graph, none, grid=SMALL_GRID, base=PropagateConfig(answer_calibration=()))
    report_on = json.loads(report_path(on).read_text())["calibration"]["answers"]
    report_kept = json.loads(report_path(kept).read_text())["calibration"]["answers"]
    assert report_on["fitted"] and report_on["n_answers"] == len(report_on["rows"]) > 0
    assert not report_kept["fitted"] and report_kept["rows"] == report_on["rows"]   # the same answers
    assert load_params(kept).answer_calibration == ANSWER_PRIOR
    assert load_params(none).answer_calibration == ()
    chosen = load_params(on)
    ratio = np.asarray(chosen.answer_calibration[1:]) / np.asarray(ANSWER_PRIOR[1:])   # scale: a * prior + b * bias
    assert np.allclose(ratio, ratio[0], atol=1e-4) and ratio[0] > 0
    assert replace(chosen, answer_calibration=ANSWER_PRIOR) == load_params(kept)
    written = {}
    for name, path in (("on", on), ("kept", kept), ("none", none)):
        propagate_manifest(grouped, graph, tmp_path / f"{name}.jsonl.gz", config=load_params(path))
        written[name] = {c.id: c.custom["choral"][0] for c in read_cuts(tmp_path / f"{name}.jsonl.gz")}
    texts = [{k: v["text"] for k, v in labels.items()} for labels in written.values()]
    assert texts[0] == texts[1] == texts[2]
    assert any(written["on"][k]["confidence"] != written["kept"][k]["confidence"] for k in written["on"])
    assert any(written["none"][k]["confidence"] != written["kept"][k]["confidence"] for k in written["on"])
    with pytest.raises(Exception, match="answer_strength"):
        TuneConfig(answer_strength=-1.0)
