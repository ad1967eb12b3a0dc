"""``choral tune`` as a stage like the others: it skips when up to date, redoes with --force, and writes
untuned parameters (exit 0, with a note) when there are too few annotated cuts to tune on."""

from pathlib import Path

from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.graph import build_graph
from choral.pipeline.group import group_manifest
from choral.pipeline.propagate import PropagateConfig, load_params
from choral.pipeline.synthetic import SyntheticConfig, generate

runner = CliRunner()
GRID = ("--folds", "2", "--alpha", "0.5,0.9", "--lambda", "0.3", "--temperature", "1", "--threshold-scale", "1")


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def grouped_and_graph(tmp_path: Path, annotated_fraction: float, n_prompts: int) -> tuple[Path, Path]:
    corpus = generate(tmp_path, SyntheticConfig(n_prompts=n_prompts, annotated_fraction=annotated_fraction, seed=4))
    group_manifest(corpus.decoded, tmp_path / "grouped.jsonl.gz")
    build_graph(tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz")
    return tmp_path / "grouped.jsonl.gz", tmp_path / "graph.npz"


def test_second_tune_skips_and_force_redoes(tmp_path: Path) -> None:
    grouped, graph = grouped_and_graph(tmp_path, 0.3, n_prompts=12)
    params = tmp_path / "params.yaml"
    first = invoke("tune", grouped, graph, params, *GRID)
    assert first.exit_code == 0, first.output
    assert "held-out WER: choral" in first.stdout and "up to date" not in first.stdout
    written = params.stat().st_mtime_ns
    again = invoke("tune", grouped, graph, params, *GRID)
    assert again.exit_code == 0, again.output
    assert f"choral tune: {params} is up to date" in again.stdout and "skipped" in again.stdout
    assert "held-out WER" not in again.stdout and params.stat().st_mtime_ns == written
    changed = invoke("tune", grouped, graph, params, *GRID[:-1], "0.8,1")
    assert changed.exit_code == 0 and "up to date" not in changed.stdout
    forced = invoke("tune", grouped, graph, params, *GRID[:-1], "0.8,1", "--force")
    assert forced.exit_code == 0, forced.output
    assert "up to date" not in forced.stdout and "held-out WER: choral" in forced.stdout
    assert params.stat().st_mtime_ns != written


def test_tune_without_annotated_cuts_writes_untuned_params_propagate_accepts(tmp_path: Path) -> None:
    grouped, graph = grouped_and_graph(tmp_path, 0.0, n_prompts=5)
    params = tmp_path / "params.yaml"
    result = invoke("tune", grouped, graph, params, *GRID, "--algorithm", "propagation")
    assert result.exit_code == 0, result.output
    assert "0 annotated cut(s), tuning needs 2" in result.stdout and "untuned" in result.stdout
    assert load_params(params) == PropagateConfig(algorithm="propagation")
    assert "# these are the propagate values of `choral tune`'s options" in params.read_text()
    again = invoke("tune", grouped, graph, params, *GRID, "--algorithm", "propagation")
    assert again.exit_code == 0 and "is up to date" in again.stdout
    rescored = tmp_path / "rescored.jsonl.gz"
    propagated = invoke("propagate", grouped, graph, rescored, "--params", params)
    assert propagated.exit_code == 0, propagated.output
    assert "algorithm" in propagated.stdout and "propagation" in propagated.stdout and rescored.exists()


def test_tune_max_cuts_and_sample_cuts_flags(tmp_path: Path) -> None:
    """--max-cuts / --sample-cuts bound the search as tune.max_cuts / tune.sample_cuts do, and are checked."""
    import json

    grouped, graph = grouped_and_graph(tmp_path, 0.3, n_prompts=40)
    full = invoke("tune", grouped, graph, tmp_path / "full.yaml", *GRID)
    assert full.exit_code == 0, full.output
    assert json.loads((tmp_path / "full.json").read_text())["search"] == "full"
    bounded = invoke("tune", grouped, graph, tmp_path / "bounded.yaml", *GRID, "--max-cuts", 200,
                     "--sample-cuts", 120)
    assert bounded.exit_code == 0, bounded.output
    search = json.loads((tmp_path / "bounded.json").read_text())["search"]
    assert 0 < search["sampled_cuts"] <= 120 and search["solved_points"] <= search["grid_points"]
    again = invoke("tune", grouped, graph, tmp_path / "bounded.yaml", *GRID, "--max-cuts", 200,
                   "--sample-cuts", 120)
    assert "up to date" in again.stdout
    changed = invoke("tune", grouped, graph, tmp_path / "bounded.yaml", *GRID, "--max-cuts", 200,
                     "--sample-cuts", 100)
    assert changed.exit_code == 0 and "up to date" not in changed.stdout  # the bounds key the sidecar
    for flags, message in ((("--max-cuts", 0), "--max-cuts must be a positive number of cuts, not 0"),
                           (("--sample-cuts", -5), "--sample-cuts must be a positive number of cuts, not -5"),
                           (("--max-cuts", 500, "--sample-cuts", 600),
                            "--sample-cuts must be at most max_cuts (500), not 600")):
        result = invoke("tune", grouped, graph, tmp_path / "bad.yaml", *GRID, *flags)
        assert result.exit_code != 0 and message in result.output, result.output
        assert not (tmp_path / "bad.yaml").exists()
    assert "--max-cuts" in invoke("tune", "--help").stdout
