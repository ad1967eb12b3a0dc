import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choral.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_synth_group_graph_chain(tmp_path: Path) -> None:
    result = invoke("synth", tmp_path, "--cuts", "160", "--seed", "1")
    assert result.exit_code == 0, result.output
    decoded = tmp_path / "decoded.jsonl.gz"
    grouped = tmp_path / "grouped.jsonl.gz"
    graph = tmp_path / "graph.npz"

    result = invoke("group", decoded, grouped)
    assert result.exit_code == 0, result.output
    assert "singletons" in result.stdout and grouped.exists()

    result = invoke("graph", grouped, graph)
    assert result.exit_code == 0, result.output
    assert "threshold" in result.stdout and "rule:" in result.stdout
    assert graph.exists() and (tmp_path / "threshold.json").exists()

    again = invoke("graph", grouped, graph)
    assert again.exit_code == 0 and "up to date" in again.stdout


def test_missing_input_is_one_line_exit_1_and_no_output(tmp_path: Path) -> None:
    result = invoke("group", tmp_path / "nope.jsonl.gz", tmp_path / "grouped.jsonl.gz")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope.jsonl.gz: file not found" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "decoded.jsonl"
    bad.write_text('{"id": "a", "start": 0, "duration": 1, "channel": 0, "type": "MonoCut", '
                   '"custom": {"nbest": [{"text": "hi", "score": -1.0}]}}\n{oops\n')
    result = invoke("group", bad, tmp_path / "grouped.jsonl.gz")
    assert result.exit_code == 1
    assert "decoded.jsonl:2: malformed JSON" in result.stderr
    assert not (tmp_path / "grouped.jsonl.gz").exists()


def test_bad_option_value_is_usage_error(tmp_path: Path) -> None:
    result = invoke("graph", tmp_path / "x.jsonl.gz", tmp_path / "g.npz", "--metric", "euclid")
    assert result.exit_code == 1
    assert "unknown metric" in result.stderr


SCRIPT = Path(sys.executable).parent / "choral"


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed beside this Python")
def test_console_script_help() -> None:
    completed = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert completed.returncode == 0
    for command in ("group", "graph", "synth"):
        assert command in completed.stdout


def test_bad_digits_policy_is_a_usage_error(tmp_path: Path) -> None:
    for command in (["group", tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"],
                    ["graph", tmp_path / "a.jsonl.gz", tmp_path / "g.npz"]):
        result = invoke(*command, "--digits", "roman")
        assert result.exit_code == 2
        assert list(tmp_path.iterdir()) == []
