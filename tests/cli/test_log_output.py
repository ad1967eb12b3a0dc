"""When stdout is not a terminal (cron logs, pipes), lines are written whole and tables without box drawing
(issue 16: stage lines and table cells wrapped at 80 columns)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from choral.cli.common import LOG_WIDTH, LogConsole, console
from choral.cli.report import wer_table


def test_a_piped_command_writes_whole_lines_without_box_drawing(tmp_path: Path) -> None:
    out = tmp_path / ("a-rather-long-folder-name-" * 4) / "synth"
    result = subprocess.run([str(Path(sys.executable).parent / "choral"), "synth", str(out), "--cuts", "20"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"choral synth -> {out}")
    assert any(line.startswith("decoded manifest") and line.rstrip().endswith(str(out / "decoded.jsonl.gz"))
               for line in lines), lines
    assert not any(set(line) & set("│┃━─┏┓┗┛") for line in lines)


def test_the_console_keeps_its_width_on_a_terminal_or_when_asked() -> None:
    piped = LogConsole(file=open("/dev/null", "w"))
    assert not piped.is_terminal and piped.width == LOG_WIDTH
    assert LogConsole(file=open("/dev/null", "w"), width=50).width == 50
    assert LogConsole(file=open("/dev/null", "w"), force_terminal=True, width=70).width == 70


def test_the_wer_table_has_no_box_drawing_in_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    """``choral eval`` and ``choral run`` print the WER table: in a log its rows are plain, whole lines."""
    accent = "en-gb-x-a-particularly-long-accent-name-that-would-wrap-at-eighty-columns"
    by = {"by": {"accent": {accent: 0.1}}}
    split = {"n_cuts": 3, "n_words": 12, "relative_wer_reduction": 0.5,
             "teacher": {"wer": 0.2, **by}, "choral": {"wer": 0.1, **by}, "oracle": {"wer": 0.05, **by},
             "breakdown": {"accent": {accent: {"n_cuts": 3, "n_words": 12, "relative_wer_reduction": 0.5}}},
             "sources": {"reference": 0, "propagated": 2, "teacher": 1}}
    console.print(wer_table({"unannotated": split}, "unannotated", "eval"))
    lines = capsys.readouterr().out.splitlines()
    assert not any(set(line) & set("│┃━─┏┓┗┛") for line in lines), lines
    assert any(line.strip().startswith(f"accent = {accent}") and line.rstrip().endswith("50.00%") for line in lines)


def _choral(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "choral"), *map(str, args)], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_a_summary_title_with_a_long_path_is_one_line(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", (0.3 * np.sin(np.arange(16_000) / 5)).astype(np.float32), 16_000)
    out = tmp_path / ("a-rather-long-folder-name-" * 4) / "cuts.jsonl.gz"
    result = _choral("prepare", out, "--audio-dir", audio)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"choral prepare -> {out}"


def test_log_json_writes_records_and_errors_as_json_lines(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", (0.3 * np.sin(np.arange(16_000) / 5)).astype(np.float32), 16_000)
    out = tmp_path / "prepare" / "cuts.jsonl.gz"
    for args in (("--log-json", "-v"), ("-v",)):
        result = _choral(*args, "prepare", out, "--audio-dir", audio, env={"CHORAL_LOG_FORMAT": "json"})
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stderr.splitlines()]
        assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
        assert any(r["logger"] == "choral.pipeline.meta" and r["level"] == "info" and r["stage"] == "prepare"
                   and r["path"] == str(out) for r in records), records
        assert records[0]["time"].endswith("Z")
    failed = _choral("--log-json", "prepare", out, "--audio-dir", tmp_path / "missing")
    assert failed.returncode == 1 and failed.stdout == ""
    [error] = [json.loads(line) for line in failed.stderr.splitlines()]
    assert error["level"] == "error" and error["logger"] == "choral.cli"
    assert error["message"] == f"choral prepare: error: {tmp_path / 'missing'}: audio folder not found"
    plain = _choral("prepare", out, "--audio-dir", tmp_path / "missing")
    assert plain.stderr.startswith("choral prepare: error:")
    bad = _choral("prepare", out, "--audio-dir", audio, env={"CHORAL_LOG_FORMAT": "xml"})
    assert bad.returncode == 2 and "CHORAL_LOG_FORMAT='xml' is not a log format" in bad.stderr
