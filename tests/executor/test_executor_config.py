"""The executor setting without Ray: config keys, the CLI's spelling of it, and a local run never importing Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.errors import InputError
from choral.pipeline.executor import ExecutorConfig, LocalExecutor
from choral.pipeline.run import RunPaths, load_run_config


def _config(tmp_path: Path, executor: str) -> Path:
    cuts = tmp_path / "cuts.jsonl.gz"
    cuts.write_bytes(b"")
    path = tmp_path / "run.yaml"
    path.write_text(f"input:\n  cuts: cuts.jsonl.gz\n{executor}", encoding="utf-8")
    return path


def test_executor_section_is_read_and_checked(tmp_path: Path) -> None:
    config = load_run_config(_config(tmp_path, "executor:\n  kind: ray\n  address: auto\n  decode_actors: 4\n"))
    assert config.executor == ExecutorConfig(kind="ray", address="auto", decode_actors=4)
    assert load_run_config(_config(tmp_path, "")).executor.kind == "local"
    with pytest.raises(InputError, match="executor.kind"):
        load_run_config(_config(tmp_path, "executor:\n  kind: spark\n"))
    with pytest.raises(InputError, match="executor.shard_cuts"):
        load_run_config(_config(tmp_path, "executor:\n  shard_cuts: 0\n"))
    with pytest.raises(InputError, match="executor.actors"):
        load_run_config(_config(tmp_path, "executor:\n  actors: 2\n"))


def test_sharded_runs_read_the_shard_index(tmp_path: Path) -> None:
    assert RunPaths(tmp_path).decoded == tmp_path / "decode" / "decoded.jsonl.gz"
    assert RunPaths(tmp_path, sharded=True).decoded == tmp_path / "decode" / "decoded.shards.json"


def test_unknown_executor_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(_config(tmp_path, "")), "--executor", "spark"])
    assert result.exit_code == 2
    assert "choose local or ray" in result.output


def test_local_executor_maps_in_order() -> None:
    executor = LocalExecutor()
    assert executor.map(lambda shared, x: shared + x, [1, 2, 3], 10) == [11, 12, 13]
    assert executor.map_stateful(lambda: 5, lambda state, shared, x: state * x + shared, [1, 2], 1) == [6, 11]
    assert executor.put(big := [1, 2]) is big  # a local handle is the value itself


def test_a_local_run_does_not_import_ray() -> None:
    code = ("import sys; import choral.cli.app, choral.pipeline.run, choral.pipeline.executor; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
