"""``choral run`` and ``choral prepare`` from the command line: output, exit codes, nothing written on errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import SupervisionSegment
from typer.testing import CliRunner

from choral.cli.app import app
from choral.cli.run import EXIT_LOCKED
from choral.pipeline.run import STAGES, run_lock
from choral.pipeline.teacher import TransducerConfig, TransducerTeacher, save_teacher

TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=1, embedding_dim=8,
                        predictor_hidden=16, joiner_dim=16, dropout=0.0)
PROMPTS = ["the cat sat on the mat", "a dog ran to the rug", "the cat ran to the rug"]

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tone(path: Path, seconds: float, freq: float, rate: int = 16_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six tones in an audio folder (one at 8 kHz), three annotated, references with an accent, a tiny teacher."""
    root = tmp_path_factory.mktemp("project")
    save_teacher(TransducerTeacher.random(TINY, seed=2), root / "teacher.pt")
    texts = {}
    for i in range(6):
        tone(root / "audio" / f"c{i}.wav", 1.0 + 0.2 * (i % 3), 250.0 + 80 * (i % 3), rate=8_000 if i == 5 else 16_000)
        texts[f"c{i}"] = PROMPTS[i % 3]
    (root / "text").write_text("".join(f"c{i} {texts[f'c{i}']}\n" for i in range(3)))
    (root / "refs.jsonl").write_text("".join(
        json.dumps(SupervisionSegment(id=k, recording_id=k, start=0, duration=1, text=v,
                                      custom={"accent": "uk" if k < "c3" else "us"}).to_dict()) + "\n"
        for k, v in texts.items()))
    (root / "run.yaml").write_text(
        "run_dir: runs/nightly\n"
        "input:\n  audio_dir: audio\n  annotations: text\n"
        "decode:\n  teacher: teacher.pt\n  nbest: 2\n  beam: 2\n"
        "tune:\n  folds: 2\n  alpha: [0.9]\n  fusion_weight: [0.3]\n  temperature: [1.0]\n  threshold_scale: [1.0]\n"
        "eval:\n  references: refs.jsonl\n  by: [accent]\n")
    return root


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_run_prints_stages_and_wer_table_then_skips_everything(project: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = invoke("run", project / "run.yaml", "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for stage in STAGES:
        assert stage in out
    assert "choral run, WER: unannotated cuts (headline)" in out and "overall" in out and "accent = us" in out
    assert "help rate" in out and "harm rate" in out and "ECE" in out
    assert "report.md" in out
    assert (run_dir / "eval" / "report.json").is_file() and (run_dir / "run.json").is_file()
    assert not (project / "runs").exists()  # --run-dir replaced the config's run_dir

    again = invoke("run", project / "run.yaml", "--run-dir", run_dir)
    assert again.exit_code == 0, again.output
    assert "none (everything up to date)" in again.stdout and "up to date, skipped" in again.stdout
    assert "choral run, WER: unannotated cuts (headline)" in again.stdout


def test_run_until_a_stage(project: Path, tmp_path: Path) -> None:
    result = invoke("run", project / "run.yaml", "--run-dir", tmp_path / "run", "--until", "decode")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "decode" / "decoded.jsonl.gz").is_file()
    assert not (tmp_path / "run" / "grouped.jsonl.gz").exists() and "WER" not in result.stdout

    bogus = invoke("run", project / "run.yaml", "--run-dir", tmp_path / "other", "--until", "bogus")
    assert bogus.exit_code == 2  # usage, as the README promises (issue 16: it was 1)
    wrong = invoke("run", project / "run.yaml", "--run-dir", tmp_path / "other", "--force-stage", "grup")
    assert wrong.exit_code == 2 and "--force-stage 'grup' is not a stage" in one_error_line(wrong)
    assert "--until 'bogus' is not a stage" in one_error_line(bogus)
    assert not (tmp_path / "other").exists()


def test_locked_run_directory_exits_75(project: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        result = invoke("run", project / "run.yaml", "--run-dir", run_dir)
    assert result.exit_code == EXIT_LOCKED == 75
    assert ".lock is held" in one_error_line(result)
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]


@pytest.mark.parametrize("addition, key", [
    ("decode:\n  bem: 4\n", "'decode.bem'"),
    ("tune:\n  alpha: 0.5\n", "'tune.alpha'"),
    ("exports:\n  format: nemo\n", "'exports'"),
])
def test_bad_config_is_one_line_exit_1_and_creates_nothing(project: Path, tmp_path: Path, addition: str,
                                                          key: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\ninput:\n  audio_dir: {project / 'audio'}\n{addition}")
    result = invoke("run", config)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith("choral run: error:") and str(config) in line and key in line
    assert not (tmp_path / "run").exists()

    missing = invoke("run", tmp_path / "absent.yaml")
    assert missing.exit_code == 1 and "absent.yaml: file not found" in one_error_line(missing)


def test_prepare_command(project: Path, tmp_path: Path) -> None:
    output = tmp_path / "prep" / "cuts.jsonl.gz"
    result = invoke("prepare", output, "--audio-dir", project / "audio", "--annotations", project / "text")
    assert result.exit_code == 0, result.output
    assert "choral prepare" in result.stdout and "annotated" in result.stdout
    assert output.is_file() and (output.parent / "failed.jsonl").is_file()

    again = invoke("prepare", output, "--audio-dir", project / "audio", "--annotations", project / "text")
    assert again.exit_code == 0 and "up to date" in again.stdout
    forced = invoke("prepare", output, "--audio-dir", project / "audio", "--annotations", project / "text",
                    "--force")
    assert forced.exit_code == 0 and "up to date" not in forced.stdout

    none = invoke("prepare", tmp_path / "x.jsonl.gz")
    assert none.exit_code == 1 and "exactly one of" in one_error_line(none)
    both = invoke("prepare", tmp_path / "x.jsonl.gz", "--audio-dir", project / "audio", "--kaldi-dir", tmp_path)
    assert both.exit_code == 1 and "(got audio_dir, kaldi_dir)" in one_error_line(both)
    unknown = tmp_path / "unknown_text"
    unknown.write_text("nobody hello\n")
    bad = invoke("prepare", tmp_path / "x.jsonl.gz", "--audio-dir", project / "audio", "--annotations", unknown)
    assert bad.exit_code == 1 and "'nobody'" in one_error_line(bad)
    assert not (tmp_path / "x.jsonl.gz").exists()
