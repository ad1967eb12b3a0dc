"""``-v``/``--verbose`` and ``CHORAL_LOG``: why a stage runs or is skipped, on stderr, one plain line each."""

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choral.cli.app import app
from choral.cli.logs import LogLevelError, resolve_level

runner = CliRunner()


@pytest.fixture(autouse=True)
def quiet_afterwards():
    yield
    logging.getLogger("choral").setLevel(logging.WARNING)


@pytest.mark.parametrize("verbose, environment, level", [
    (0, None, logging.WARNING), (0, "", logging.WARNING), (0, "info", logging.INFO), (0, " DEBUG ", logging.DEBUG),
    (0, "error", logging.ERROR), (1, "error", logging.INFO), (2, None, logging.DEBUG), (3, "warning", logging.DEBUG),
])
def test_flags_win_over_the_environment(verbose: int, environment: str | None, level: int) -> None:
    assert resolve_level(verbose, environment) == level


def test_an_unknown_environment_level_is_named() -> None:
    with pytest.raises(LogLevelError, match=r"CHORAL_LOG='loud' is not a level; use one of debug, info"):
        resolve_level(0, "loud")


def test_verbose_says_why_a_stage_runs_then_that_it_is_skipped(tmp_path: Path) -> None:
    assert runner.invoke(app, ["synth", str(tmp_path), "--cuts", "60"]).exit_code == 0
    decoded, grouped = tmp_path / "decoded.jsonl.gz", tmp_path / "grouped.jsonl.gz"

    first = runner.invoke(app, ["-v", "group", str(decoded), str(grouped)])
    assert first.exit_code == 0, first.output
    assert f"choral: INFO choral.pipeline.meta: group: runs, output {grouped} does not exist" in first.stderr

    again = runner.invoke(app, ["--verbose", "group", str(decoded), str(grouped)])
    assert f"group: {grouped} is up to date, skipped" in again.stderr

    changed = runner.invoke(app, ["-v", "group", str(decoded), str(grouped), "--top-k", "2"])
    assert "group: runs, parameters changed (grouping)" in changed.stderr

    quiet = runner.invoke(app, ["group", str(decoded), str(grouped), "--top-k", "2"])
    assert quiet.exit_code == 0 and "choral: INFO" not in quiet.stderr


def test_choral_log_sets_the_level_and_a_bad_value_is_a_usage_error(tmp_path: Path) -> None:
    assert runner.invoke(app, ["synth", str(tmp_path), "--cuts", "60"]).exit_code == 0
    args = ["group", str(tmp_path / "decoded.jsonl.gz"), str(tmp_path / "grouped.jsonl.gz")]
    result = runner.invoke(app, args, env={"CHORAL_LOG": "info"})
    assert result.exit_code == 0 and "group: runs, output" in result.stderr
    bad = runner.invoke(app, args, env={"CHORAL_LOG": "loud"})
    assert bad.exit_code == 2 and "CHORAL_LOG='loud' is not a level" in bad.stderr
