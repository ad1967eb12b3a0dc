"""Teacher backends: a toy backend registered by a test is resolved, opened and scored, decode uses it, the CLI
help lists it; the built-in kinds and their messages stay as they were."""

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from lhotse import MonoCut

from choral.pipeline.decode import DecodeConfig, decode_manifest
from choral.pipeline.errors import ChoralError
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.meta import meta_path
from choral.pipeline.teacher import (
    AudioError,
    DecodeResult,
    TransducerConfig,
    TransducerTeacher,
    open_teacher,
    registry,
    resolve_teacher,
    save_teacher,
    teacher_help,
    teacher_inputs,
    teacher_scorer,
)
from choral.pipeline.teacher.onnx_backend import OnnxBackend
from choral.pipeline.teacher.registry import backend_of, get_teacher_backend, register_teacher_backend
from choral.pipeline.teacher.torch_backend import CheckpointBackend

TOY_HELP = "a .toy file beside its .vocab (a test's teacher)"


class ToyTeacher:
    """Answers every cut with its own id; a cut named ``silent`` has unusable audio."""

    def __init__(self, nbest: int) -> None:
        self.nbest = nbest

    def decode(self, cuts: Sequence[MonoCut]) -> list[DecodeResult]:
        silent = {cut.id: "audio is empty" for cut in cuts if cut.id == "silent"}
        if silent:
            raise AudioError(silent)
        frames = np.ones((2, 3), dtype=np.float32)
        return [DecodeResult([(cut.id, [1], -1.0)][: self.nbest], frames, frames.mean(axis=0)) for cut in cuts]

    def scorer(self, cuts: Sequence[MonoCut]):
        known = {cut.id for cut in cuts}
        return lambda cut_id, texts: [-float(len(text)) if cut_id in known else np.nan for text in texts]


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Registers the toy backend for one test; lists the (path, beam, nbest, temperature) it was opened with."""
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))  # the toy leaves with the test
    calls: list[tuple] = []

    @register_teacher_backend
    class ToyBackend:
        name = "toy"
        kind = "a toy teacher"
        description = TOY_HELP

        def claims(self, path: Path) -> bool:
            return path.suffix == ".toy"

        def files(self, path: Path) -> list[Path]:
            vocab = path.with_suffix(".vocab")
            if not path.is_file() or not vocab.is_file():
                raise ChoralError(f"{path}: a toy teacher needs {path.name} and {vocab.name}")
            return [path, vocab]

        def open(self, path: Path, *, beam: int, nbest: int, search_temperature: float) -> ToyTeacher:
            calls.append((path, beam, nbest, search_temperature))
            return ToyTeacher(nbest)

    return calls


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    path = tmp_path / "model.toy"
    path.write_text("toy")
    path.with_suffix(".vocab").write_text("a b c")
    return path


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    cuts = [MonoCut(id=name, start=0.0, duration=1.0, channel=0) for name in ("u0", "silent", "u1")]
    write_cuts(cuts, tmp_path / "cuts.jsonl.gz")
    return tmp_path / "cuts.jsonl.gz"


def test_a_registered_backend_is_resolved_opened_and_scored(opened: list, toy: Path, manifest: Path) -> None:
    assert backend_of(toy) is get_teacher_backend("toy")  # asked before the checkpoint kind, which takes any file
    assert resolve_teacher(toy) == toy
    assert teacher_inputs(toy) == [toy, toy.with_suffix(".vocab")]
    teacher = open_teacher(toy, beam=3, nbest=2, search_temperature=1.5)
    assert isinstance(teacher, ToyTeacher) and opened == [(toy, 3, 2, 1.5)]

    scorer = teacher_scorer(manifest, str(toy))
    assert (scorer.name, scorer.inputs) == (f"teacher:{toy.resolve()}", [toy, toy.with_suffix(".vocab")])
    assert len(opened) == 1  # named and keyed, not opened yet
    assert list(scorer("u1", ["ab", "abcd"])) == [-2.0, -4.0] and len(opened) == 2
    scorer("u0", ["a"])
    assert len(opened) == 2  # opened once

    (toy.with_suffix(".vocab")).unlink()
    with pytest.raises(ChoralError, match="a toy teacher needs model.toy and model.vocab"):
        resolve_teacher(toy)
    with pytest.raises(ChoralError, match="toy teacher needs"):
        teacher_scorer(manifest, toy)  # a missing teacher is an error when the scorer is made


def test_decode_runs_a_registered_backend(opened: list, toy: Path, manifest: Path, tmp_path: Path) -> None:
    summary = decode_manifest(manifest, tmp_path / "run", toy, DecodeConfig(nbest=1, beam=2))
    assert (summary.n_decoded, summary.n_failed) == (2, 1) and opened == [(toy, 2, 1, 1.0)]
    decoded = read_cuts(tmp_path / "run" / "decoded.jsonl.gz")
    assert [(c.id, c.custom["nbest"][0]["text"]) for c in decoded] == [("u0", "u0"), ("u1", "u1")]
    failed = [json.loads(line) for line in (tmp_path / "run" / "failed.jsonl").read_text().splitlines()]
    assert failed == [{"id": "silent", "reason": "audio is empty"}]
    inputs = json.loads(meta_path(tmp_path / "run" / "decoded.jsonl.gz").read_text())["inputs"]
    assert {Path(p).name for p in inputs} == {"cuts.jsonl.gz", "model.toy", "model.vocab"}


def test_the_help_lists_every_backend(opened: list) -> None:
    text = teacher_help(" that scores", "Without it: a floor.")
    assert text.startswith("Teacher that scores: `default` (the teacher shipped with choral")
    assert text.endswith(f", or {TOY_HELP}. Without it: a floor.")
    assert CheckpointBackend.description in text and OnnxBackend.description in text
    assert teacher_help(backends=["toy"]).endswith(f"synthetic speech) or {TOY_HELP}.")
    with pytest.raises(ChoralError, match="unknown teacher backend 'bogus'"):
        teacher_help(backends=["bogus"])


def test_builtin_kinds_keep_their_messages(tmp_path: Path) -> None:
    assert {"checkpoint", "onnx"} <= {backend.name for backend in registry.teacher_backends()}
    with pytest.raises(ChoralError, match=r"nope\.pt: teacher checkpoint not found \(nor an ONNX teacher directory\)"):
        resolve_teacher(tmp_path / "nope.pt")
    with pytest.raises(ChoralError, match="ONNX teacher directory lacks encoder.onnx, decoder.onnx"):
        resolve_teacher(tmp_path)  # any directory is read as the ONNX layout
    checkpoint = tmp_path / "teacher.pt"
    save_teacher(TransducerTeacher.random(TransducerConfig(encoder_layers=1, encoder_hidden=8, encoder_input=8,
                                                           conv_channels=2, embedding_dim=4, predictor_hidden=8,
                                                           joiner_dim=8, dropout=0.0)), checkpoint)
    assert isinstance(backend_of(checkpoint), CheckpointBackend) and teacher_inputs(checkpoint) == [checkpoint]
    assert isinstance(open_teacher(checkpoint, beam=2, nbest=2), TransducerTeacher)
