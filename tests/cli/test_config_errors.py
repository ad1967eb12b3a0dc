"""A bad config value is named as the user wrote it: the YAML key from a file, the option from the command line."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.errors import InputError
from choral.pipeline.run_config import load_run_config

runner = CliRunner()


def error_line(args: list[object]) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("yaml_text, key_message, command, flag_message", [
    ("decode:\n  nbest: 9\n  beam: 4\n",
     "key 'decode.nbest' 9 exceeds 'decode.beam' 4: the beam holds at most 4 hypotheses",
     ["decode", "{cuts}", "{out}", "--nbest", "9", "--beam", "4"],
     "choral decode: error: --nbest 9 exceeds --beam 4: the beam holds at most 4 hypotheses"),
    ("decode:\n  on_error: ignore\n", "key 'decode.on_error' must be 'skip' or 'fail', not 'ignore'",
     ["decode", "{cuts}", "{out}", "--on-error", "ignore"],
     "choral decode: error: --on-error must be skip or fail, not 'ignore'"),
    ("propagate:\n  fusion_weight: 2\n", "key 'propagate.fusion_weight' must be in [0, 1], not 2.0",
     ["propagate", "{cuts}", "{graph}", "{out}", "--lambda", "2"],
     "choral propagate: error: --lambda must be in [0, 1], not 2.0"),
    ("propagate:\n  max_borrowed: -1\n", "key 'propagate.max_borrowed' must be 0 (no cap) or a positive count",
     ["propagate", "{cuts}", "{graph}", "{out}", "--max-borrowed", "-1"],
     "choral propagate: error: --max-borrowed must be 0 (no cap) or a positive count, not -1"),
    ("tune:\n  alpha: [0.5, 1.0]\n", "key 'tune.alpha' must be in [0, 1), not 1.0",
     ["tune", "{cuts}", "{graph}", "{out}", "--alpha", "0.5,1.0"],
     "choral tune: error: --alpha must be in [0, 1), not 1.0"),
    ("tune:\n  fusion_weight: [0.5, 1.5]\n", "key 'tune.fusion_weight' must be in [0, 1], not 1.5",
     ["tune", "{cuts}", "{graph}", "{out}", "--lambda", "0.5,1.5"],
     "choral tune: error: --lambda must be in [0, 1], not 1.5"),
    ("tune:\n  temperature: []\n", "key 'tune.temperature' needs at least one value",
     ["tune", "{cuts}", "{graph}", "{out}", "--temperature", ","],
     "choral tune: error: --temperature needs at least one value"),
    ("propagate:\n  algorithm: spreading\n", None,
     ["tune", "{cuts}", "{graph}", "{out}", "--algorithm", "magic"],
     "choral tune: error: --algorithm must be spreading or propagation, not 'magic'"),
])
def test_same_bad_value_names_the_key_in_yaml_and_the_flag_on_the_cli(
        tmp_path: Path, yaml_text: str, key_message: str | None, command: list[str], flag_message: str) -> None:
    if key_message is not None:
        config = tmp_path / "run.yaml"
        config.write_text("input:\n  audio_dir: audio\n" + yaml_text)
        with pytest.raises(InputError) as caught:
            load_run_config(config)
        assert str(caught.value).startswith(f"{config}: {key_message}")
        assert "--" not in str(caught.value)
        line = error_line(["run", config])
        assert line.startswith("choral run: error:") and f"{config}: {key_message}" in line
    paths = {"{cuts}": tmp_path / "missing.jsonl.gz", "{graph}": tmp_path / "graph.npz",
             "{out}": tmp_path / "out"}
    assert error_line([paths.get(a, a) for a in command]) == flag_message
    assert sorted(p.name for p in tmp_path.iterdir()) == (["run.yaml"] if key_message else [])


def test_a_bad_params_file_is_named_by_its_key_even_from_the_cli(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("propagate:\n  alpha: 1.5\n")
    line = error_line(["propagate", tmp_path / "g.jsonl.gz", tmp_path / "graph.npz", tmp_path / "out.jsonl.gz",
                       "--params", params])
    assert line == f"choral propagate: error: {params}: key 'propagate.alpha' must be in [0, 1), not 1.5"
