from pathlib import Path

import pytest
import yaml

from choral.pipeline.errors import InputError
from choral.pipeline.graph import build_graph
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import read_cuts
from choral.pipeline.propagate import load_params
from choral.pipeline.synthetic import SyntheticConfig, generate
from choral.pipeline.tune import TuneConfig, parse_grid, tune_params


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
