"""NaN or infinity where a finite number is meant is a config error, named as the user wrote it (issue 16)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.config import check_finite, coerce
from choral.pipeline.decode import DecodeConfig
from choral.pipeline.errors import ConfigError, InputError
from choral.pipeline.graph import GraphConfig
from choral.pipeline.propagate import PropagateConfig
from choral.pipeline.run_config import load_run_config

runner = CliRunner()


@pytest.mark.parametrize("section, key, value", [
    ("graph", "threshold", ".nan"), ("graph", "confidence", ".nan"), ("graph", "threshold", ".inf"),
    ("decode", "batch_duration", ".nan"), ("decode", "batch_duration", ".inf"),
    ("decode", "search_temperature", "-.inf"), ("propagate", "temperature", ".nan"),
    ("propagate", "threshold_scale", ".inf"), ("propagate", "share_min", ".nan"),
    ("propagate", "borrowed_floor", "-.inf"), ("export", "min_confidence", ".nan"),
    ("group", "jaccard_threshold", ".nan"),
])
def test_non_finite_yaml_values_name_the_key(tmp_path: Path, section: str, key: str, value: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"input:\n  audio_dir: audio\n{section}:\n  {key}: {value}\n")
    with pytest.raises(InputError) as caught:
        load_run_config(config)
    assert str(caught.value).startswith(f"{config}: key '{section}.{key}' must be a finite number, not ")


def test_non_finite_values_in_a_grid_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("input:\n  audio_dir: audio\ntune:\n  alpha: [0.5, .nan]\n")
    with pytest.raises(InputError, match=r"key 'tune.alpha' must be a finite number, not \[0.5, nan\]"):
        load_run_config(config)


def test_coerce_refuses_non_finite_floats_and_keeps_finite_ones() -> None:
    assert coerce(2, float) == 2.0 and coerce(None, float | None) is None
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(TypeError):
            coerce(value, float)
        with pytest.raises(TypeError):
            coerce(value, float | None)


@pytest.mark.parametrize("make, field", [
    (lambda: GraphConfig(threshold=float("nan")), "threshold"),
    (lambda: GraphConfig(confidence=float("nan")), "confidence"),
    (lambda: DecodeConfig(batch_duration=float("inf")), "batch_duration"),
    (lambda: DecodeConfig(search_temperature=float("nan")), "search_temperature"),
    (lambda: PropagateConfig(temperature=float("nan")), "temperature"),
    (lambda: PropagateConfig(clamp_confidence=float("nan")), "clamp_confidence"),
])
def test_configs_refuse_non_finite_values(make, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make()
    assert caught.value.field == field and "must be a finite number" in str(caught.value)


def test_check_finite_passes_defaults() -> None:
    for config in (GraphConfig(), DecodeConfig(), PropagateConfig()):
        check_finite(config)


@pytest.mark.parametrize("args, message", [
    (["graph", "{in}", "{out}", "--threshold", "nan"],
     "choral graph: error: --threshold must be a finite number, not nan"),
    (["graph", "{in}", "{out}", "--threshold", "inf"],
     "choral graph: error: --threshold must be a finite number, not inf"),
    (["decode", "{in}", "{out}", "--search-temperature", "inf"],
     "choral decode: error: --search-temperature must be a finite number, not inf"),
    (["decode", "{in}", "{out}", "--batch-duration", "inf"],
     "choral decode: error: --batch-duration must be a finite number, not inf"),
    (["propagate", "{in}", "{graph}", "{out}", "--temperature", "nan"],
     "choral propagate: error: --temperature must be a finite number, not nan"),
])
def test_non_finite_flags_name_the_flag(tmp_path: Path, args: list[str], message: str) -> None:
    paths = {"{in}": tmp_path / "in.jsonl.gz", "{out}": tmp_path / "out", "{graph}": tmp_path / "graph.npz"}
    result = runner.invoke(app, [str(paths.get(a, a)) for a in args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [message]
    assert list(tmp_path.iterdir()) == []
