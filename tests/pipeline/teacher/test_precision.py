"""The teacher's precision: the auto guard's rule, float16 through the real tiny teachers on the CPU (real half
arithmetic), the decode and scoring paths, the memo key, the CLI options, and auto on CUDA when there is one."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import Recording
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline import decode as decode_module
from choral.pipeline.decode import DecodeConfig, decode_manifest
from choral.pipeline.errors import ConfigError
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.teacher import TransducerTeacher, save_teacher
from choral.pipeline.teacher import registry as registry_module
from choral.pipeline.teacher.model import TransducerConfig
from choral.pipeline.teacher.precision import (
    apply_precision,
    check_precision_spec,
    guard,
    guard_applies,
    half_keeps_nbest,
)
from choral.pipeline.teacher.registry import open_teacher, teacher_scorer
from choral.pipeline.teacher.score_memo import ScoreMemo, fingerprint, memo_path
from choral.pipeline.teacher.stateless import StatelessConfig, StatelessTransducer
from choral.pipeline.teacher.stateless_backend import StatelessTeacher

TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=1, embedding_dim=8,
                        predictor_hidden=16, joiner_dim=16, dropout=0.0)
runner = CliRunner()
# |float16 - float32| of a score, per unit of |score|, plus a floor; the tiny teachers here stay below 2e-3
BOUND = (0.01, 0.05)


@pytest.fixture(autouse=True)
def choral_records_reach_caplog(monkeypatch, caplog) -> None:
    """A CLI test earlier in the session may have configured the ``choral`` logger (its own handler, no
    propagation, level WARNING): here its records go to caplog at INFO."""
    monkeypatch.setattr(logging.getLogger("choral"), "propagate", True)
    caplog.set_level(logging.INFO, logger="choral")


def write_tone(path: Path, seconds: float, freq: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
             16_000)
    return path


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest of 4 tones (two alike, so they group) and a tiny teacher checkpoint."""
    audio = tmp_path / "audio"
    audio.mkdir()
    specs = {"a": (1.2, 300.0), "c": (0.9, 500.0), "d": (1.6, 220.0)}
    for name, (seconds, freq) in specs.items():
        write_tone(audio / f"{name}.wav", seconds, freq, seed=len(name) + int(freq))
    shutil.copy(audio / "a.wav", audio / "b.wav")
    cuts = [Recording.from_file(audio / f"{n}.wav", recording_id=n).to_cut() for n in ("a", "b", "c", "d")]
    manifest = tmp_path / "cuts.jsonl.gz"
    write_cuts(cuts, manifest)
    checkpoint = tmp_path / "teacher.pt"
    save_teacher(TransducerTeacher.random(TINY, seed=2), checkpoint)
    return manifest, checkpoint


def _nbest(path: Path) -> dict[str, list[tuple[str, float]]]:
    return {c.id: [(h["text"], h["score"]) for h in c.custom["nbest"]] for c in read_cuts(path)}


def _key(scorer, grouped: Path, suffix: str) -> str:
    return fingerprint(scorer.name + suffix, [grouped, *scorer.inputs])


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= BOUND[0] * abs(a) + BOUND[1]


# --- (a) the guard's rule ------------------------------------------------------------------------------------
def test_rule_keeps_half_only_when_every_nbest_is_the_same() -> None:
    full = {"a": ["x y", "x"], "b": ["z"]}
    kept = half_keeps_nbest(full, {"a": ["x y", "x"], "b": ["z"]})
    assert kept.precision == "float16" and "all 2 probe cuts" in kept.reason
    swapped = half_keeps_nbest(full, {"a": ["x", "x y"], "b": ["z"]})
    assert swapped.precision == "float32" and "cut a" in swapped.reason and "rank 1" in swapped.reason
    shorter = half_keeps_nbest(full, {"a": ["x y"], "b": ["z"]})
    assert shorter.precision == "float32" and "rank 2" in shorter.reason and "(none)" in shorter.reason
    missing = half_keeps_nbest(full, {"a": ["x y", "x"]})
    assert missing.precision == "float32" and "cut b" in missing.reason
    assert half_keeps_nbest({}, {}).precision is None  # nothing compared: probe again


def test_precision_specs() -> None:
    for good in ("auto", "float32", "float16"):
        assert check_precision_spec(good) == good
    for bad in ("half", "fp16", "bfloat16", "", "FLOAT16"):
        with pytest.raises(ConfigError, match="must be auto, float32 or float16"):
            check_precision_spec(bad)
    teacher = TransducerTeacher.random(TINY, seed=1)
    assert not guard_applies("auto", teacher)  # on the CPU auto is float32
    assert not guard_applies("float16", teacher) and not guard_applies("auto", object())


# --- (b) float16 through the real tiny teachers --------------------------------------------------------------
def test_half_teacher_keeps_float32_weights_and_scores_close(setup: tuple[Path, Path], caplog) -> None:
    manifest, _ = setup
    cuts = read_cuts(manifest)
    teacher = TransducerTeacher.random(TINY, seed=2, beam=4, nbest=4)
    weights = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    features = teacher.features(cuts)
    full = teacher.decode_features(features)
    teacher.set_precision("float16")
    assert teacher.dtype == torch.float16 and next(teacher.model.parameters()).dtype == torch.float16
    half = teacher.decode_features(features)
    teacher.set_precision("float32")
    assert all(torch.equal(v, weights[k]) for k, v in teacher.model.state_dict().items())  # never rounded
    compared = 0
    for a, b in zip(full, half):
        assert b.frames.dtype == np.float32 and a.frames.shape == b.frames.shape
        scores = {text: score for text, _, score in b.nbest}
        for text, _, score in a.nbest:
            if text in scores:
                compared += 1
                assert _close(score, scores[text]), (text, score, scores[text])
    assert compared >= len(cuts)

    verdict, results = guard(teacher, lambda: teacher.decode_features(features),
                             lambda done: {str(i): [h[0] for h in r.nbest] for i, r in enumerate(done)}, "test")
    assert verdict.precision == teacher.precision
    expected = [[h[0] for h in r.nbest] for r in (half if verdict.precision == "float16" else full)]
    assert [[h[0] for h in r.nbest] for r in results] == expected
    lines = [r.getMessage() for r in caplog.records if "precision auto" in r.getMessage()]
    assert len(lines) == 1 and f"{verdict.precision} for this run" in lines[0] and "probe: test" in lines[0]


def test_stateless_teacher_in_half_keeps_its_normalisation_in_float32(setup: tuple[Path, Path]) -> None:
    manifest, _ = setup
    cuts = read_cuts(manifest)
    torch.manual_seed(5)
    model = StatelessTransducer(StatelessConfig(vocab_size=6, conv_channels=4, encoder_input=16, encoder_hidden=16,
                                                encoder_layers=1, decoder_dim=16, joiner_dim=16, dropout=0.0)).eval()
    teacher = StatelessTeacher.__new__(StatelessTeacher)  # no sentencepiece model needed: frames only
    teacher.model, teacher.decodable = model, None
    teacher._precision_changed()
    features = teacher.features(cuts)
    full, _ = teacher.encode_features(features)
    teacher.set_precision("float16")
    half, _ = teacher.encode_features(features)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    assert torch.allclose(half.float(), full, atol=0.02)
    # 30 s of loud fbank: float16 sums of squares would overflow, the float32 normalisation does not
    loud = [np.full((3000, features[0].shape[1]), 15.0, dtype=np.float32) + np.random.default_rng(0)
            .standard_normal((3000, features[0].shape[1])).astype(np.float32) * 5]
    assert torch.isfinite(teacher.encode_features(loud)[0]).all()


def test_decode_stage_in_float16_and_auto_guard(setup: tuple[Path, Path], monkeypatch, caplog) -> None:
    manifest, checkpoint = setup
    run = manifest.parent / "run"
    config = DecodeConfig(nbest=3, beam=4, batch_duration=2.5)
    full = decode_manifest(manifest, run / "f32", checkpoint, config, precision="float32")
    half = decode_manifest(manifest, run / "f16", checkpoint, config, precision="float16")
    assert (full.precision, half.precision) == ("float32", "float16")
    assert any("precision float16 on the CPU" in r.getMessage() for r in caplog.records)
    a, b = _nbest(run / "f32" / "decoded.jsonl.gz"), _nbest(run / "f16" / "decoded.jsonl.gz")
    assert list(a) == list(b)
    for cut_id in a:
        theirs = dict(b[cut_id])
        assert all(_close(score, theirs[text]) for text, score in a[cut_id] if text in theirs)
    # float16 keys the sidecar: a float16 run does not take a float32 output as up to date, auto does
    assert not decode_manifest(manifest, run / "f32", checkpoint, config, precision="float16").skipped
    assert decode_manifest(manifest, run / "f16", checkpoint, config, precision="float16").skipped
    assert not decode_manifest(manifest, run / "f16", checkpoint, config, precision="auto").skipped

    # auto's guard, as it runs on CUDA, forced on the CPU: the first batch decides, one line says why
    monkeypatch.setattr(decode_module, "guard_applies", lambda spec, teacher: spec == "auto")
    caplog.clear()
    guarded = decode_manifest(manifest, run / "auto", checkpoint, config, precision="auto")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision auto")]
    assert len(lines) == 1 and f"{guarded.precision} for this run" in lines[0]
    assert "decode's first batch, 2 cuts" in lines[0]
    got = _nbest(run / "auto" / "decoded.jsonl.gz")
    reference = b if guarded.precision == "float16" else a
    assert [[t for t, _ in got[c]] for c in got] == [[t for t, _ in reference[c]] for c in reference]
    first_batch = [c.id for c in read_cuts(manifest)][:2]
    assert all(got[c] == reference[c] for c in first_batch)  # the probe's own results are kept, not redone


# --- scoring and its memo ----------------------------------------------------------------------------------
def test_scorer_precision_and_memo_key(setup: tuple[Path, Path], monkeypatch, caplog) -> None:
    manifest, checkpoint = setup
    run = manifest.parent / "run"
    decode_manifest(manifest, run, checkpoint, DecodeConfig(nbest=3, beam=4, batch_duration=2.5))
    grouped = run / "grouped.jsonl.gz"
    group_manifest(run / "decoded.jsonl.gz", grouped)
    requests = [("a", ["a cat", "the dog", "b"]), ("d", ["zz", "a cat sat"])]

    half = teacher_scorer(grouped, checkpoint, precision="float16")
    full = teacher_scorer(grouped, checkpoint, precision="float32")
    assert half.name.endswith("[precision=float16]") and full.name == teacher_scorer(grouped, checkpoint).name
    half_scores = half.scorer.score_many(requests)  # type: ignore[attr-defined]
    assert len(ScoreMemo(memo_path(grouped), _key(half, grouped, "|float16"))) == 5  # kept under its own key
    full_scores = full.scorer.score_many(requests)  # type: ignore[attr-defined]
    fresh = TransducerTeacher.random(TINY, seed=2).scorer(read_cuts(grouped)).score_many(requests)
    assert np.allclose(np.concatenate(full_scores), np.concatenate(fresh), atol=1e-5)  # never the half ones
    assert not np.array_equal(np.concatenate(half_scores), np.concatenate(full_scores))
    assert all(_close(x, y) for x, y in zip(np.concatenate(full_scores), np.concatenate(half_scores)))

    # auto's scoring guard forced on the CPU: ranks the first cuts' own n-best in both precisions
    monkeypatch.setattr(registry_module, "guard_applies", lambda spec, teacher: spec == "auto")
    auto = teacher_scorer(grouped, checkpoint, precision="auto")
    assert auto.name == full.name
    auto_scores = auto.scorer.score_many(requests)  # type: ignore[attr-defined]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision auto")]
    assert len(lines) == 1 and "the scorer's ranking of" in lines[0]
    chosen = half_scores if "float16 for this run" in lines[0] else full_scores
    assert np.allclose(np.concatenate(auto_scores), np.concatenate(chosen), atol=1e-4)


# --- (c) the CLI, ONNX teachers -----------------------------------------------------------------------------
def test_cli_precision_options(setup: tuple[Path, Path]) -> None:
    manifest, checkpoint = setup
    out = manifest.parent / "cli"
    result = runner.invoke(app, ["decode", str(manifest), str(out), "--teacher", str(checkpoint), "--nbest", "2",
                                 "--beam", "2", "--device", "cpu", "--precision", "float16"])
    assert result.exit_code == 0, result.output
    assert "precision" in result.stdout and "float16" in result.stdout
    bad = runner.invoke(app, ["decode", str(manifest), str(out / "x"), "--teacher", str(checkpoint),
                              "--precision", "half"])
    assert bad.exit_code != 0 and not (out / "x").exists()
    assert "--precision must be auto, float32 or float16, not 'half'" in bad.output
    for command in ("tune", "propagate"):
        assert "--precision" in runner.invoke(app, [command, "--help"]).stdout


def test_run_config_precision_key(tmp_path: Path) -> None:
    from choral.pipeline.errors import InputError
    from choral.pipeline.run import load_run_config

    (tmp_path / "audio").mkdir()
    path = tmp_path / "run.yaml"
    path.write_text("input:\n  audio_dir: audio\ndevice: cpu\nprecision: float16\n", encoding="utf-8")
    assert load_run_config(path).precision == "float16"
    path.write_text("input:\n  audio_dir: audio\nprecision: half\n", encoding="utf-8")
    with pytest.raises(InputError, match="key 'precision' must be auto, float32 or float16, not 'half'"):
        load_run_config(path)


def test_onnx_teachers_ignore_precision_with_a_warning(tmp_path: Path, caplog) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from choral.pipeline.teacher.onnx_export import export_onnx

    teacher = TransducerTeacher.random(TINY, seed=3)
    exported = export_onnx(teacher.model, teacher.tokens, tmp_path / "onnx")
    opened = open_teacher(exported, precision="float16")
    assert not hasattr(opened, "set_precision")
    assert any("precision float16 ignored" in r.getMessage() and "onnxruntime" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    apply_precision(opened, "auto")
    assert not caplog.records


# --- (d) auto on CUDA --------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda_gives_float32_nbest(setup: tuple[Path, Path], caplog) -> None:
    manifest, checkpoint = setup
    run = manifest.parent / "run"
    config = DecodeConfig(nbest=3, beam=4, batch_duration=2.5)
    auto = decode_manifest(manifest, run / "auto", checkpoint, config, device="cuda", precision="auto")
    full = decode_manifest(manifest, run / "f32", checkpoint, config, device="cuda", precision="float32")
    assert full.precision == "float32" and auto.precision in ("float16", "float32")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision auto on cuda")]
    assert len(lines) == 1 and f"{auto.precision} for this run" in lines[0]
    got, want = _nbest(run / "auto" / "decoded.jsonl.gz"), _nbest(run / "f32" / "decoded.jsonl.gz")
    assert list(got) == list(want)
    for cut_id in got:  # the n-best of auto equal float32's: texts and order; scores within the half bound
        assert [t for t, _ in got[cut_id]] == [t for t, _ in want[cut_id]]
        assert all(_close(a, b) for (_, a), (_, b) in zip(got[cut_id], want[cut_id]))
