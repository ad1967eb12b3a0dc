import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.decode import DecodeConfig, decode_manifest
from choral.pipeline.errors import ChoralError, ConfigError, InputError
from choral.pipeline.fields import load_array, nbest
from choral.pipeline.graph import GraphConfig, build_graph
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.teacher import TransducerConfig, TransducerTeacher, save_teacher

TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=1, embedding_dim=8,
                        predictor_hidden=16, joiner_dim=16, dropout=0.0)


def write_tone(path: Path, seconds: float, freq: float, seed: int = 0, rate: int = 16_000) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32), rate)
    return path


def cut_from(path: Path, cut_id: str):
    return Recording.from_file(path, recording_id=cut_id).to_cut()

@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A manifest of 3 good cuts (two with identical audio, so they group) + 1 with missing audio, and a teacher."""
    audio = tmp_path / "audio"
    audio.mkdir()
    write_tone(audio / "a.wav", 1.2, 300.0, seed=1)
    shutil.copy(audio / "a.wav", audio / "b.wav")
    write_tone(audio / "c.wav", 0.9, 500.0, seed=2)
    write_tone(audio / "gone.wav", 0.5, 200.0, seed=3)
    cuts = [cut_from(audio / f"{name}.wav", name) for name in ("a", "b", "gone", "c")]
    (audio / "gone.wav").unlink()
    manifest = tmp_path / "cuts.jsonl.gz"
    write_cuts(cuts, manifest)
    checkpoint = tmp_path / "teacher.pt"
    save_teacher(TransducerTeacher.random(TINY, seed=2), checkpoint)
    return manifest, checkpoint, tmp_path / "run"


def test_decode_writes_manifest_that_later_stages_consume(setup: tuple[Path, Path, Path]) -> None:
    manifest, checkpoint, run = setup
    seen = []
    config = DecodeConfig(nbest=3, beam=4, batch_duration=2.5, save_frames=True)
    summary = decode_manifest(manifest, run, checkpoint, config, on_batch=lambda s: seen.append(s.n_decoded))
    assert (summary.n_decoded, summary.n_failed) == (3, 1)
    assert summary.audio_seconds == pytest.approx(1.2 + 1.2 + 0.9) and summary.rtf > 0 and seen[-1] == 3
    decoded = run / "decoded.jsonl.gz"
    cuts = read_cuts(decoded)
    assert [c.id for c in cuts] == ["a", "b", "c"]
    for cut in cuts:
        hyps = nbest(cut, decoded)
        assert 1 <= len(hyps) <= 3 and [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        embedding = load_array(cut, "embedding", decoded)
        frames = load_array(cut, "frames", decoded)
        assert embedding.ndim == 1 and frames.shape[1] == embedding.shape[0]
        assert np.allclose(frames.mean(axis=0), embedding, atol=1e-5)
    assert cuts[0].custom["nbest"] == cuts[1].custom["nbest"]  # same audio, same hypotheses
    failed = [json.loads(line) for line in (run / "failed.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failed] == ["gone"] and "not found" in failed[0]["reason"]

    group_manifest(decoded, run / "grouped.jsonl.gz")
    grouped = read_cuts(run / "grouped.jsonl.gz")
    assert grouped[0].custom["group"] == grouped[1].custom["group"]
    graph = build_graph(run / "grouped.jsonl.gz", run / "graph.npz")
    assert graph.n_cuts == 3 and graph.n_pairs >= 1

    again = decode_manifest(manifest, run, checkpoint, config)
    assert again.skipped


def test_on_error_fail_writes_nothing(setup: tuple[Path, Path, Path]) -> None:
    manifest, checkpoint, run = setup
    with pytest.raises(InputError) as caught:
        decode_manifest(manifest, run, checkpoint, DecodeConfig(on_error="fail"))
    assert caught.value.cut_id == "gone" and "\n" not in str(caught.value)
    assert not (run / "decoded.jsonl.gz").exists() and not (run / "failed.jsonl").exists()
    assert not (run / "embeddings.h5").exists()


def test_default_teacher_resolves_to_package_data_or_says_it_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    from choral.pipeline.teacher import registry

    shipped = tmp_path / "default_teacher.pt"
    save_teacher(TransducerTeacher.random(TINY, seed=0), shipped)
    monkeypatch.setattr(registry, "DEFAULT_CHECKPOINT", shipped)
    assert registry.resolve_teacher("default") == shipped
    monkeypatch.setattr(registry, "DEFAULT_CHECKPOINT", tmp_path / "absent.pt")
    with pytest.raises(ChoralError, match="default teacher checkpoint is missing"):
        registry.resolve_teacher("default")


def test_cli(setup: tuple[Path, Path, Path]) -> None:
    manifest, checkpoint, run = setup
    runner = CliRunner()
    ok = runner.invoke(app, ["decode", str(manifest), str(run), "--teacher", str(checkpoint), "--nbest", "2",
                             "--beam", "2", "--batch-duration", "3"])
    assert ok.exit_code == 0, ok.output
    assert "cuts decoded" in ok.output and (run / "decoded.jsonl.gz").exists()
    failing = runner.invoke(app, ["decode", str(manifest), str(run / "strict"), "--teacher", str(checkpoint),
                                  "--on-error", "fail"])
    assert failing.exit_code == 1
    assert not (run / "strict" / "decoded.jsonl.gz").exists()
    missing = runner.invoke(app, ["decode", str(manifest), str(run / "d"), "--teacher", str(run / "nope.pt")])
    assert missing.exit_code == 1 and "teacher checkpoint not found" in missing.stderr


def test_corrupt_and_empty_audio_are_listed_as_failed(setup: tuple[Path, Path, Path]) -> None:
    manifest, checkpoint, run = setup
    cuts = read_cuts(manifest)
    broken = Path(cuts[3].recording.sources[0].source).with_name("broken.wav")
    broken.write_bytes(b"RIFF not really a wave file")
    sf.write(broken.with_name("empty.wav"), np.zeros(0, dtype=np.float32), 16_000)
    empty = cut_from(broken.with_name("empty.wav"), "empty")
    bad = cuts[3].with_id("broken")
    bad.recording.sources[0].source = str(broken)
    write_cuts([cuts[0], bad, empty], manifest)
    summary = decode_manifest(manifest, run, checkpoint, DecodeConfig(nbest=2, beam=2))
    assert (summary.n_decoded, summary.n_failed) == (1, 2)
    reasons = {f["id"]: f["reason"] for f in map(json.loads, (run / "failed.jsonl").read_text().splitlines())}
    assert reasons["broken"].startswith("cannot read audio") and "empty" in reasons


def test_options_are_checked() -> None:
    with pytest.raises(ChoralError, match="exceeds"):
        DecodeConfig(nbest=9, beam=8)
    with pytest.raises(ChoralError):
        DecodeConfig(on_error="ignore")  # type: ignore[arg-type]


def test_propagate_scores_borrowed_transcripts_with_the_teacher(setup: tuple[Path, Path, Path]) -> None:
    from choral.pipeline.propagate import PropagateConfig, propagate_manifest
    from choral.pipeline.teacher import teacher_scorer

    manifest, checkpoint, run = setup
    decode_manifest(manifest, run, checkpoint, DecodeConfig(nbest=2, beam=2))
    group_manifest(run / "decoded.jsonl.gz", run / "grouped.jsonl.gz")
    build_graph(run / "grouped.jsonl.gz", run / "graph.npz", config=GraphConfig(threshold=1e9))
    scorer = teacher_scorer(run / "grouped.jsonl.gz", checkpoint)
    texts = ["hello", "a b c"]
    scores = scorer("a", texts)
    assert len(scores) == 2 and all(np.isfinite(scores))
    summary = propagate_manifest(run / "grouped.jsonl.gz", run / "graph.npz", run / "rescored.jsonl.gz",
                                 PropagateConfig(share_min=0.0), scorer=scorer)
    assert summary.n_cuts == 3
    again = propagate_manifest(run / "grouped.jsonl.gz", run / "graph.npz", run / "rescored.jsonl.gz",
                               PropagateConfig(share_min=0.0), scorer=teacher_scorer(run / "grouped.jsonl.gz",
                                                                                       checkpoint))
    assert again.skipped


def test_scorer_reuses_stored_frames_and_scores_like_the_audio(setup: tuple[Path, Path, Path]) -> None:
    from choral.pipeline.teacher import load_teacher

    manifest, checkpoint, run = setup
    decode_manifest(manifest, run, checkpoint, DecodeConfig(nbest=2, beam=2, save_frames=True))
    decoded = read_cuts(run / "decoded.jsonl.gz")
    teacher = load_teacher(checkpoint)
    texts = ["the cat", "a dog sat"]
    without_frames = []
    for cut in decoded:
        bare = cut.with_custom("frames", None) if hasattr(cut, "with_custom") else cut
        without_frames.append(bare)
    from_audio = [teacher.scorer([c])(c.id, texts) for c in without_frames]
    for cut in decoded:  # the audio is gone: only the stored frames can answer
        Path(cut.recording.sources[0].source).unlink(missing_ok=True)
    from_frames = [teacher.scorer([c])(c.id, texts) for c in decoded]
    assert np.allclose(from_audio, from_frames, atol=1e-3)


def test_restored_audio_is_decoded_on_the_next_run(setup: tuple[Path, Path, Path]) -> None:
    """A lhotse manifest is decoded as it is: its audio files' sizes and mtimes key the stage too (issue 16)."""
    manifest, checkpoint, run = setup
    config = DecodeConfig(nbest=2, beam=2)
    assert decode_manifest(manifest, run, checkpoint, config).n_failed == 1
    assert decode_manifest(manifest, run, checkpoint, config).skipped
    write_tone(manifest.parent / "audio" / "gone.wav", 0.5, 200.0, seed=3)
    again = decode_manifest(manifest, run, checkpoint, config)
    assert not again.skipped and (again.n_decoded, again.n_failed) == (4, 0)
    assert decode_manifest(manifest, run, checkpoint, config).skipped


def test_cuts_outside_the_duration_limits_are_listed_not_decoded(setup: tuple[Path, Path, Path],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A long recording got its first sentence's label, a 10 ms clip a letter (issue 16): neither is decoded."""
    manifest, checkpoint, run = setup
    audio = manifest.parent / "audio"
    cuts = read_cuts(manifest)
    long = cut_from(write_tone(audio / "long.wav", 31.0, 250.0, seed=4), "long")
    click = cut_from(write_tone(audio / "click.wav", 0.01, 250.0, seed=5), "click")
    write_cuts([cuts[0], long, cuts[1], click, cuts[3]], manifest)
    with caplog.at_level("WARNING", logger="choral.pipeline.decode"):
        summary = decode_manifest(manifest, run, checkpoint, DecodeConfig(nbest=2, beam=2, batch_duration=2.0))
    assert (summary.n_decoded, summary.n_failed) == (3, 2)
    assert [c.id for c in read_cuts(run / "decoded.jsonl.gz")] == ["a", "b", "c"]
    reasons = {f["id"]: f["reason"] for f in map(json.loads, (run / "failed.jsonl").read_text().splitlines())}
    assert reasons == {
        "long": "31 s is longer than max_duration 30 s: segment long recordings first "
                "(e.g. lhotse cut.cut_into_windows)",
        "click": "0.01 s is shorter than min_duration 0.3 s: too short to hold a word",
    }
    assert "2 cut(s) outside 0.3-30 s were not decoded" in caplog.text

    # the limits are settings; with on_error=fail the first refused cut stops the stage, writing nothing
    wide = decode_manifest(manifest, run / "wide", checkpoint,
                           DecodeConfig(nbest=2, beam=2, min_duration=0.0, max_duration=1.0))
    assert (wide.n_decoded, wide.n_failed) == (2, 3)
    with pytest.raises(InputError, match=r"\(cut long\): 31 s is longer than max_duration 30 s"):
        decode_manifest(manifest, run / "strict", checkpoint, DecodeConfig(nbest=2, beam=2, on_error="fail"))
    assert not (run / "strict").exists() or not any((run / "strict").iterdir())


def test_duration_limits_are_checked_and_have_flags(setup: tuple[Path, Path, Path]) -> None:
    with pytest.raises(ConfigError, match="min_duration must be non-negative"):
        DecodeConfig(min_duration=-1)
    with pytest.raises(ConfigError, match="max_duration 0.2 must exceed min_duration 0.3"):
        DecodeConfig(max_duration=0.2)
    manifest, checkpoint, run = setup
    result = CliRunner().invoke(app, ["decode", str(manifest), str(run), "--teacher", str(checkpoint),
                                      "--max-duration", "1.0", "--min-duration", "0.8", "--nbest", "2", "--beam", "2"])
    assert result.exit_code == 0, result.output
    assert [c.id for c in read_cuts(run / "decoded.jsonl.gz")] == ["c"]
    bad = CliRunner().invoke(app, ["decode", str(manifest), str(run / "x"), "--max-duration", "0.1"])
    assert bad.exit_code == 1 and "--max-duration 0.1 must exceed --min-duration 0.3" in bad.stderr


def test_cut_ids_that_collide_as_hdf5_names_get_their_own_arrays(setup: tuple[Path, Path, Path]) -> None:
    """``spk1`` and ``spk1/utt1``, ``a/b`` and ``a//b``, ``.``, a NUL byte: h5py errors before (issue 16)."""
    from choral.pipeline.decode import storage_key

    manifest, checkpoint, run = setup
    audio = manifest.parent / "audio"
    ids = ["spk1", "spk1/utt1", "a/b", "a//b", ".", "x\x00y", "sha256-" + "0" * 64, ""]
    cuts = [cut_from(write_tone(audio / f"id{i}.wav", 0.6 + 0.1 * i, 200.0 + 40 * i, seed=i), f"r{i}")
            .with_id(cut_id) for i, cut_id in enumerate(ids)]
    write_cuts(cuts, manifest)
    summary = decode_manifest(manifest, run, checkpoint, DecodeConfig(nbest=2, beam=2, save_frames=True))
    assert (summary.n_decoded, summary.n_failed) == (len(ids), 0)
    decoded = read_cuts(run / "decoded.jsonl.gz")
    assert [c.id for c in decoded] == ids  # the manifest keeps the true ids
    keys = [c.custom["embedding"].storage_key for c in decoded]
    assert len(set(keys)) == len(ids) and keys[0] == "embedding/spk1"
    embeddings = [load_array(c, "embedding", run / "decoded.jsonl.gz") for c in decoded]
    frames = [load_array(c, "frames", run / "decoded.jsonl.gz") for c in decoded]
    for i in range(len(ids)):  # each cut reads back its own arrays (different audio, different lengths)
        assert np.allclose(frames[i].mean(axis=0), embeddings[i], atol=1e-5)
        assert len({f.shape[0] for f in frames}) == len({round(c.duration / 0.04) for c in decoded})
    assert storage_key("utt-1.wav") == "utt-1.wav" and storage_key("a/b") != storage_key("a//b")
    hashed = storage_key("a/b")
    assert storage_key(hashed).startswith("sha256-") and storage_key(hashed) != hashed


def test_gone_audio_when_the_scorer_needs_it_is_one_line(setup: tuple[Path, Path, Path]) -> None:
    """Frames not saved and the audio gone when tune or propagate score a borrowed transcript: an AudioError
    traceback before (issue 16)."""
    from choral.pipeline.teacher import teacher_scorer

    manifest, checkpoint, run = setup
    decode_manifest(manifest, run, checkpoint, DecodeConfig(nbest=2, beam=2))
    group_manifest(run / "decoded.jsonl.gz", run / "grouped.jsonl.gz")
    for cut in read_cuts(manifest):
        Path(cut.recording.sources[0].source).unlink(missing_ok=True)
    scorer = teacher_scorer(run / "grouped.jsonl.gz", checkpoint)
    with pytest.raises(ChoralError) as caught:
        scorer("a", ["a borrowed transcript"])
    message = str(caught.value)
    assert message.startswith("cut a: the teacher scorer needs its audio (audio file not found")
    assert "--save-frames" in message and "\n" not in message


def test_loader_workers_decode_the_same_and_list_the_same_failures(setup: tuple[Path, Path, Path]) -> None:
    manifest, checkpoint, run = setup
    cuts = read_cuts(manifest)
    click = cut_from(write_tone(manifest.parent / "audio" / "click.wav", 0.01, 250.0, seed=5), "click")
    write_cuts([cuts[0], click, cuts[1], cuts[2], cuts[3]], manifest)  # a refused cut and one with gone audio
    plain = decode_manifest(manifest, run / "plain", checkpoint, DecodeConfig(nbest=2, beam=2, batch_duration=1.5))
    loaded = decode_manifest(manifest, run / "loaded", checkpoint,
                             DecodeConfig(nbest=2, beam=2, batch_duration=1.5, workers=2))
    assert (loaded.n_decoded, loaded.n_failed) == (plain.n_decoded, plain.n_failed) == (3, 2)
    assert ([(c.id, c.custom["nbest"]) for c in read_cuts(run / "loaded" / "decoded.jsonl.gz")]
            == [(c.id, c.custom["nbest"]) for c in read_cuts(run / "plain" / "decoded.jsonl.gz")])
    assert (run / "loaded" / "failed.jsonl").read_text() == (run / "plain" / "failed.jsonl").read_text()
    # workers change how decode runs, not what it writes: the first run's sidecar still holds
    again = decode_manifest(manifest, run / "loaded", checkpoint, DecodeConfig(nbest=2, beam=2, batch_duration=1.5))
    assert again.skipped
    with pytest.raises(ConfigError):
        DecodeConfig(workers=-1)


def test_decode_writes_each_cuts_snr_and_the_option_keys_the_sidecar(setup: tuple[Path, Path, Path]) -> None:
    """``custom.snr_db`` is :func:`noise.cut_snr_db` of the cut's audio; ``measure_snr`` off writes none, and turning
    it on or off decodes again (an old decode has no SNR for propagate's noisy_pair_snr to read)."""
    from choral.pipeline.noise import cut_snr_db

    manifest, checkpoint, run = setup
    config = DecodeConfig(nbest=2, beam=2)
    decode_manifest(manifest, run, checkpoint, config)
    by_id = {c.id: c for c in read_cuts(manifest)}
    for cut in read_cuts(run / "decoded.jsonl.gz"):
        assert cut.custom["snr_db"] == cut_snr_db(by_id[cut.id]) and np.isfinite(cut.custom["snr_db"])
    off = DecodeConfig(nbest=2, beam=2, measure_snr=False)
    assert not decode_manifest(manifest, run, checkpoint, off).skipped
    assert all("snr_db" not in c.custom for c in read_cuts(run / "decoded.jsonl.gz"))
    assert decode_manifest(manifest, run, checkpoint, off).skipped
    result = CliRunner().invoke(app, ["decode", str(manifest), str(run / "cli"), "--teacher", str(checkpoint),
                                      "--nbest", "2", "--beam", "2", "--no-measure-snr"])
    assert result.exit_code == 0, result.output
    assert all("snr_db" not in c.custom for c in read_cuts(run / "cli" / "decoded.jsonl.gz"))
