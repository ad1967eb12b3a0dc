"""Long recordings: ``prepare`` splits them into utterances at pauses, each piece a cut into the original audio."""

import gzip
import json
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.errors import ConfigError
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.prepare import InputConfig, prepare_input
from choral.pipeline.segment import frame_energies, speech_pieces

DEMO_AUDIO = Path(__file__).resolve().parents[2] / "benchmarks" / "accented" / "demo" / "audio"
GAP = 0.6


def concatenate(folder: Path, count: int = 4, seed: int = 0) -> list[tuple[str, float, float]]:
    """``folder/long.flac``: ``count`` demo utterances joined by 0.6 s of low noise; the files themselves are
    copied beside it. Returns (name, start, end) of each utterance in the long file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    truth = []
    position = 0
    for path in sorted(DEMO_AUDIO.glob("*.flac"))[:count]:
        samples, rate = sf.read(path, dtype="float32")
        assert rate == 16_000
        if parts:
            gap = (0.001 * rng.standard_normal(int(GAP * rate))).astype(np.float32)
            parts.append(gap)
            position += len(gap)
        truth.append((path.stem, position / rate, (position + len(samples)) / rate))
        parts.append(samples)
        position += len(samples)
        sf.write(folder / path.name, samples, rate)
    sf.write(folder / "long.flac", np.concatenate(parts), 16_000)
    return truth


def failed_of(output: Path) -> dict[str, str]:
    lines = output.with_name("failed.jsonl").read_text().splitlines()
    return {entry["id"]: entry["reason"] for entry in map(json.loads, lines)}


def test_prepare_splits_a_long_recording_at_its_pauses(tmp_path: Path) -> None:
    truth = concatenate(tmp_path / "audio")
    output = tmp_path / "out" / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(audio_dir=tmp_path / "audio", max_cut_duration=5.0), output)
    cuts = read_cuts(output)
    pieces = [c for c in cuts if c.recording_id == "long"]
    assert summary.n_split == 1 and summary.n_cuts == len(truth) + len(pieces)
    assert len(pieces) == len(truth)
    for piece, (_, start, end) in zip(pieces, truth):
        assert abs(piece.start - start) < 0.15 and abs(piece.end - end) < 0.15, (piece.start, piece.end, start, end)
        # a cut into the original file at its own offset, with an id that says where
        assert piece.recording.sources[0].source == str((tmp_path / "audio" / "long.flac").resolve())
        assert piece.id == f"long-{round(piece.start * 1000):08d}-{round(piece.end * 1000):08d}"
    # the short files are left as they are
    assert {c.id for c in cuts if c.recording_id != "long"} == {name for name, _, _ in truth}
    assert all(c.start == 0 for c in cuts if c.recording_id != "long")
    # the same ids on a second, forced run
    prepare_input(InputConfig(audio_dir=tmp_path / "audio", max_cut_duration=5.0), output, force=True)
    assert [c.id for c in read_cuts(output)] == [c.id for c in cuts]


def test_speech_without_a_pause_is_cut_at_the_quietest_frame() -> None:
    """25 s of 'speech' (loud, with a dip every 0.2 s too short to be a pause) and one quieter stretch at 14 s."""
    rate = 16_000
    t = np.arange(25 * rate) / rate
    envelope = np.where((t % 1.0) < 0.1, 0.3, 1.0)  # 100 ms dips: shorter than min_pause
    envelope[(t > 13.95) & (t < 14.05)] = 0.05
    samples = 0.3 * envelope * np.sin(2 * np.pi * 200 * t)
    pieces = speech_pieces(frame_energies(samples), 25.0, max_duration=20.0, min_duration=0.3, min_pause=0.3)
    assert len(pieces) == 2
    assert pieces[0].start == 0.0 and abs(pieces[0].end - 14.0) < 0.06 and pieces[1].end == 25.0
    assert all(p.duration <= 20.0 for p in pieces)


def test_silence_and_clicks_are_not_speech() -> None:
    rate = 16_000
    quiet = np.zeros(30 * rate)
    assert speech_pieces(frame_energies(quiet), 30.0, max_duration=20.0, min_duration=0.3, min_pause=0.3) == []
    quiet[rate * 10: rate * 10 + 320] = 0.5  # a 20 ms click
    assert speech_pieces(frame_energies(quiet), 30.0, max_duration=20.0, min_duration=0.3, min_pause=0.3) == []


def test_too_short_clips_and_long_silence_are_skipped_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    rng = np.random.default_rng(1)
    sf.write(folder / "click.wav", (0.3 * rng.standard_normal(160)).astype(np.float32), 16_000)  # 10 ms
    sf.write(folder / "hush.wav", np.zeros(25 * 16_000, dtype=np.float32), 16_000)
    speech, rate = sf.read(sorted(DEMO_AUDIO.glob("*.flac"))[0], dtype="float32")
    sf.write(folder / "ok.flac", speech, rate)
    output = tmp_path / "out" / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(audio_dir=folder), output)
    assert [c.id for c in read_cuts(output)] == ["ok"] and summary.n_failed == 2
    failed = failed_of(output)
    assert "too short to hold a word" in failed["click"] and "0.01 s" in failed["click"]
    assert "no speech found" in failed["hush"]


def test_an_annotated_long_cut_is_kept_whole(tmp_path: Path) -> None:
    concatenate(tmp_path / "audio", count=3)
    (tmp_path / "text").write_text("long one two three\n")
    output = tmp_path / "out" / "cuts.jsonl.gz"
    prepare_input(InputConfig(audio_dir=tmp_path / "audio", annotations=tmp_path / "text", max_cut_duration=5.0),
                  output)
    assert "long" in {c.id for c in read_cuts(output)}


@pytest.mark.parametrize("changes, field", [
    ({"max_cut_duration": 0.2}, "max_cut_duration"),
    ({"min_cut_duration": -1.0}, "min_cut_duration"),
    ({"min_pause": 0.0}, "min_pause"),
    ({"max_cut_duration": float("nan")}, "max_cut_duration"),
])
def test_segmentation_settings_are_checked(tmp_path: Path, changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        InputConfig(audio_dir=tmp_path, **changes)
    assert error.value.field == field


def test_prepare_flags_split_and_report(tmp_path: Path) -> None:
    concatenate(tmp_path / "audio", count=3)
    output = tmp_path / "out" / "cuts.jsonl.gz"
    result = CliRunner().invoke(app, ["prepare", str(output), "--audio-dir", str(tmp_path / "audio"),
                                      "--max-cut-duration", "4"])
    assert result.exit_code == 0, result.output
    assert "long recordings split" in result.output
    assert sum(c.recording_id == "long" for c in read_cuts(output)) == 3
    bad = CliRunner().invoke(app, ["prepare", str(tmp_path / "x.jsonl.gz"), "--audio-dir", str(tmp_path / "audio"),
                                   "--max-cut-duration", "0.1"])
    assert bad.exit_code == 1 and "--max-cut-duration" in bad.output


@pytest.mark.usefixtures("one_torch_thread")
def test_decoded_pieces_read_as_their_own_files(tmp_path: Path) -> None:
    """``choral run`` to decode, default teacher: each piece of the long file gets the label its own file gets."""
    truth = concatenate(tmp_path / "audio")
    (tmp_path / "run.yaml").write_text(
        "input:\n  audio_dir: audio\n  max_cut_duration: 5\n"
        "decode:\n  teacher: default\n  nbest: 2\n  beam: 2\n  batch_duration: 12\n")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "run.yaml"), "--run-dir", str(tmp_path / "run"),
                                      "--until", "decode"])
    assert result.exit_code == 0, result.output
    with gzip.open(tmp_path / "run" / "decode" / "decoded.jsonl.gz", "rt") as lines:
        labels = {entry["id"]: entry["custom"]["nbest"][0]["text"] for entry in map(json.loads, lines)}
    pieces = sorted(label for label in labels if label.startswith("long-"))
    assert len(pieces) == len(truth)
    assert all(labels[name] for name, _, _ in truth) and all(labels[piece] for piece in pieces)
    # a piece starts within ~10 ms of its file, and a transducer may read a shifted utterance a little differently
    # (benchmarks/longform_split.py: 142 of the 200 demo pieces read exactly as their files did), so the pieces are
    # held to their files' labels as a whole: at most 15% word edits, most pieces identical
    ours, theirs = [labels[piece] for piece in pieces], [labels[name] for name, _, _ in truth]
    assert jiwer.wer(theirs, ours) <= 0.15, list(zip(theirs, ours))
    assert sum(a == b for a, b in zip(ours, theirs)) >= len(truth) // 2 + 1


def test_a_lhotse_manifest_with_a_long_cut_goes_through_prepare(tmp_path: Path) -> None:
    """A plain lhotse manifest is decoded as it is, unless a cut is longer than max_cut_duration."""
    truth = concatenate(tmp_path / "audio")
    long = Recording.from_file(tmp_path / "audio" / "long.flac").to_cut()
    short = Recording.from_file(tmp_path / "audio" / f"{truth[0][0]}.flac").to_cut()
    manifest = tmp_path / "cuts.jsonl.gz"
    write_cuts([long, short], manifest)
    assert not InputConfig(cuts=manifest).needs_prepare  # 11 s: under the default 20 s
    config = InputConfig(cuts=manifest, max_cut_duration=5.0)
    assert config.needs_prepare
    output = tmp_path / "out" / "cuts.jsonl.gz"
    prepare_input(config, output)
    ids = [c.id for c in read_cuts(output)]
    assert len(ids) == len(truth) + 1 and ids[-1] == short.id and all(i.startswith("long-") for i in ids[:-1])
