"""``choral export`` through the real command line (typer's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pytest
import soundfile as sf
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.cut import Cut
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.export import ExportPaths, Label, register_export_format, unregister_export_format
from choral.pipeline.manifest import atomic_output, write_cuts

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Rich's boxed output as one line of single-spaced words."""
    return " ".join(text.replace("│", " ").split())


def rescored_manifest(tmp_path: Path) -> Path:
    """Two cuts of one 3 s recording: an annotated segment and a low-confidence teacher label."""
    audio = tmp_path / "talk.flac"
    t = np.arange(3 * 16000) / 16000
    sf.write(audio, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    recording = Recording.from_file(audio)
    cuts = []
    for cut_id, start, reference, label in [
        ("talk-a", 0.0, "Good evening", {"text": "good evening", "confidence": 1.0, "source": "reference"}),
        ("talk-b", 1.5, None, {"text": "how are you", "confidence": 0.4, "source": "teacher"}),
    ]:
        supervision = SupervisionSegment(id=cut_id, recording_id=recording.id, start=0, duration=1.5,
                                         text=reference, speaker="talk")
        cuts.append(MonoCut(id=cut_id, start=start, duration=1.5, channel=0, recording=recording,
                            supervisions=[supervision], custom={"choral": [{**label, "teacher_text": "x"}]}))
    path = tmp_path / "rescored.jsonl.gz"
    write_cuts(cuts, path)
    return path


def test_nemo_export_summary_and_rerun(tmp_path: Path) -> None:
    rescored = rescored_manifest(tmp_path)
    out = tmp_path / "manifests"
    result = invoke("export", rescored, out, "--format", "nemo", "--min-confidence", "0.5", "--split", "dev")
    assert result.exit_code == 0, result.output
    assert "kept" in result.stdout and "dropped" in result.stdout and "teacher" in result.stdout
    lines = [json.loads(line) for line in (out / "choral_dev.json").read_text().splitlines()]
    # the first half of a 3 s file is a segment: offset 0.0 is written
    assert lines == [{"audio_filepath": str(tmp_path / "talk.flac"), "offset": 0.0, "duration": 1.5,
                      "text": "Good evening"}]

    again = invoke("export", rescored, out, "--format", "nemo", "--min-confidence", "0.5", "--split", "dev")
    assert again.exit_code == 0 and "up to date" in again.stdout


def test_missing_input_is_one_line_exit_1_and_no_output(tmp_path: Path) -> None:
    result = invoke("export", tmp_path / "nope.jsonl.gz", tmp_path / "out", "--format", "kaldi")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope.jsonl.gz: file not found" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_fbank_with_another_format_is_an_error(tmp_path: Path) -> None:
    result = invoke("export", rescored_manifest(tmp_path), tmp_path / "out", "--format", "kaldi", "--with-fbank")
    assert result.exit_code == 1 and "--with-fbank" in result.stderr
    assert not (tmp_path / "out").exists()


def test_help_names_the_formats() -> None:
    result = invoke("export", "--help")
    assert result.exit_code == 0
    assert all(word in result.stdout for word in ("lhotse", "nemo", "kaldi", "--min-confidence", "--with-fbank"))


def test_an_unknown_format_is_a_usage_error_naming_the_registered_ones(tmp_path: Path) -> None:
    result = invoke("export", rescored_manifest(tmp_path), tmp_path / "out", "--format", "espnet")
    assert result.exit_code == 2 and "'espnet' is not one of 'lhotse', 'nemo', 'kaldi'" in flat(result.stderr)
    assert not (tmp_path / "out").exists()


@pytest.fixture()
def toy() -> Iterator[str]:
    """A toy format registered after the CLI was imported, for one test: one ``id<TAB>text`` line per cut."""

    @register_export_format("toy", output="{prefix}_{split}.tsv", description="cut id and text per line")
    def write_toy(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
        with atomic_output(paths.primary) as tmp:
            tmp.write_text("".join(f"{cut.id}\t{label.text}\n" for cut, label in items), encoding="utf-8")
        return 0

    try:
        yield "toy"
    finally:
        unregister_export_format("toy")


def test_a_registered_format_is_listed_and_written(tmp_path: Path, toy: str) -> None:
    assert "toy: OUT_DIR/PREFIX_SPLIT.tsv (cut id and text per line)" in flat(invoke("export", "--help").stdout)
    out = tmp_path / "manifests"
    result = invoke("export", rescored_manifest(tmp_path), out, "--format", "TOY", "--split", "dev")
    assert result.exit_code == 0, result.output
    assert "choral export (toy)" in flat(result.stdout)
    assert (out / "choral_dev.tsv").read_text() == "talk-a\tGood evening\ntalk-b\thow are you\n"


def test_a_removed_format_is_neither_listed_nor_accepted(tmp_path: Path) -> None:
    assert "toy" not in invoke("export", "--help").stdout
    result = invoke("export", rescored_manifest(tmp_path), tmp_path / "out", "--format", "toy")
    assert result.exit_code == 2 and "'toy' is not one of" in flat(result.stderr)
