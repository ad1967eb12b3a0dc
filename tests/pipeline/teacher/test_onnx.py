"""ONNX teachers: choral's export decodes like the torch teacher; icefall-style stateless models run too."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import Recording
from torch import nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from choral.cli.app import app  # noqa: E402
from choral.pipeline.decode import DecodeConfig, decode_manifest  # noqa: E402
from choral.pipeline.errors import ChoralError  # noqa: E402
from choral.pipeline.manifest import read_cuts, write_cuts  # noqa: E402
from choral.pipeline.meta import meta_path  # noqa: E402
from choral.pipeline.teacher import (  # noqa: E402
    TransducerConfig,
    TransducerTeacher,
    resolve_teacher,
    save_teacher,
    teacher_scorer,
)
from choral.pipeline.teacher.onnx_backend import (  # noqa: E402
    OnnxTransducer,
    PieceTable,
    load_onnx_teacher,
    read_tokens,
)
from choral.pipeline.teacher.onnx_export import export_metadata, export_onnx  # noqa: E402

TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=2, embedding_dim=8,
                        predictor_hidden=16, predictor_layers=2, joiner_dim=16, dropout=0.0)
FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tone(path: Path, seconds: float, freq: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    audio = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    sf.write(path, (audio + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 16_000)
    return path


@pytest.fixture(scope="module")
def cuts(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("audio")
    specs = [(1.3, 220.0), (0.7, 440.0), (2.1, 330.0)]
    return [Recording.from_file(write_tone(folder / f"u{i}.wav", s, f, seed=i), recording_id=f"u{i}").to_cut()
            for i, (s, f) in enumerate(specs)]


@pytest.fixture(scope="module")
def teacher() -> TransducerTeacher:
    return TransducerTeacher.random(TINY, seed=3, beam=4, nbest=4)


@pytest.fixture(scope="module")
def exported(teacher: TransducerTeacher, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(teacher.model, teacher.tokens, tmp_path_factory.mktemp("export") / "onnx")


def test_onnx_decodes_like_torch(teacher: TransducerTeacher, exported: Path, cuts) -> None:
    onnx_teacher = load_onnx_teacher(exported, beam=4, nbest=4)
    for ours, theirs in zip(teacher.decode(cuts), onnx_teacher.decode(cuts), strict=True):
        assert [text for text, _, _ in theirs.nbest] == [text for text, _, _ in ours.nbest]
        assert [tokens for _, tokens, _ in theirs.nbest] == [tokens for _, tokens, _ in ours.nbest]
        assert np.allclose([s for _, _, s in theirs.nbest], [s for _, _, s in ours.nbest], atol=1e-3)
        # stored frames and the pooled embedding are the raw encoder frames, as with torch
        assert theirs.frames.shape == ours.frames.shape and np.allclose(theirs.frames, ours.frames, atol=1e-5)
        assert np.allclose(theirs.embedding, ours.embedding, atol=1e-5)
    texts = ["hello there", "a", ""]
    torch_scores = teacher.scorer(cuts)("u2", texts)
    onnx_scores = onnx_teacher.scorer(cuts)("u2", texts)
    assert np.allclose(onnx_scores, torch_scores, atol=1e-3)


def test_tokens_and_metadata_round_trip(teacher: TransducerTeacher, exported: Path) -> None:
    lines = (exported / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["<blk> 0", "\u2581 1"] and len(lines) == len(teacher.tokens)
    assert all(len(line.split()) == 2 for line in lines)
    tokens = read_tokens(exported / "tokens.txt")
    assert tokens.symbols == teacher.tokens.symbols and not isinstance(tokens, PieceTable)
    expected = export_metadata(teacher.model)
    assert expected["decoder_kind"] == "lstm" and expected["feature_normalization"] == "utterance_cmvn"
    for name in FILES[:3]:
        props = {p.key: p.value for p in onnx.load(str(exported / name)).metadata_props}
        assert props == expected
    model = OnnxTransducer(exported, len(tokens))
    assert model.kind == "lstm" and model.cmvn and (model.layers, model.hidden) == (2, 16)


# --- an icefall-style model: stateless decoder, raw fbank, BPE pieces ---------------------------
PIECES = ["<blk>", "<sos/eos>", "<unk>", "\u2581THE", "\u2581A", "S", "T", "\u2581", "C", "AT"]


class _IcefallEncoder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(80, dim)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.proj(x[:, ::4] / 10)), (x_lens + 3) // 4


class _StatelessDecoder(nn.Module):
    """icefall's decoder: an embedding of the last ``context`` symbols (-1: none yet), mixed and projected."""

    def __init__(self, vocab: int, context: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 8)
        self.mix = nn.Linear(8 * context, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1)
        return torch.relu(self.mix(embedded.flatten(1)))


class _Joiner(nn.Module):
    def __init__(self, dim: int, vocab: int) -> None:
        super().__init__()
        self.out = nn.Linear(dim, vocab)

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(encoder_out + decoder_out))


def _export_icefall_style(folder: Path, context: int = 2, dim: int = 12) -> Path:
    """Export the three modules with icefall's input/output names and metadata."""
    torch.manual_seed(5)
    vocab = len(PIECES)
    folder.mkdir(parents=True)
    parts = [
        ("encoder.onnx", _IcefallEncoder(dim), (torch.randn(2, 41, 80), torch.tensor([41, 30])), ["x", "x_lens"],
         ["encoder_out", "encoder_out_lens"], {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"},
                                               "encoder_out": {0: "N", 1: "T_out"}, "encoder_out_lens": {0: "N"}},
         {"model_type": "zipformer2", "version": "1"}),
        ("decoder.onnx", _StatelessDecoder(vocab, context, dim), (torch.zeros(2, context, dtype=torch.long),), ["y"],
         ["decoder_out"], {"y": {0: "N"}, "decoder_out": {0: "N"}},
         {"context_size": str(context), "vocab_size": str(vocab)}),
        ("joiner.onnx", _Joiner(dim, vocab), (torch.randn(2, dim), torch.randn(2, dim)),
         ["encoder_out", "decoder_out"], ["logit"], {"encoder_out": {0: "N"}, "decoder_out": {0: "N"},
                                                     "logit": {0: "N"}}, {"joiner_dim": str(dim)}),
    ]
    for name, module, args, inputs, outputs, dynamic, meta in parts:
        path = folder / name
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=13)
        proto = onnx.load(str(path))
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
    (folder / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(PIECES)), encoding="utf-8")
    return folder


@pytest.mark.filterwarnings("ignore")
def test_stateless_icefall_style_model(tmp_path: Path, cuts) -> None:
    folder = _export_icefall_style(tmp_path / "icefall")
    onnx_teacher = load_onnx_teacher(folder, beam=4, nbest=3)
    model = onnx_teacher.model
    assert model.kind == "stateless" and model.context_size == 2 and not model.cmvn
    results = onnx_teacher.decode(cuts)
    assert len(results) == 3
    for result in results:
        assert 1 <= len(result.nbest) <= 3
        assert all(np.isfinite(score) and score <= 0 for _, _, score in result.nbest)
        assert result.frames.shape[1] == 12 and np.allclose(result.embedding, result.frames.mean(axis=0))
    tokens = onnx_teacher.tokens
    assert isinstance(tokens, PieceTable)
    assert tokens.encode("The cat's") == [3, 7, 8, 9, 5]  # ▁THE ▁ C AT S (no piece holds the apostrophe)
    assert tokens.decode([3, 4, 7, 8, 9, 5]) == "THE A CATS"
    (score,) = onnx_teacher.scorer(cuts)("u1", ["the cat"])
    assert np.isfinite(score) and score < 0


def _cut_manifest(cuts, path: Path) -> Path:
    write_cuts(cuts, path)
    return path


def test_decode_cli_and_propagate_scorer_accept_an_onnx_directory(exported: Path, teacher: TransducerTeacher,
                                                                  cuts, tmp_path: Path) -> None:
    manifest = _cut_manifest(cuts, tmp_path / "cuts.jsonl.gz")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["decode", str(manifest), str(run), "--teacher", str(exported),
                                      "--nbest", "2", "--beam", "4"])
    assert result.exit_code == 0, result.output
    decoded = read_cuts(run / "decoded.jsonl.gz")
    assert [c.id for c in decoded] == ["u0", "u1", "u2"] and all(c.custom["nbest"] for c in decoded)
    inputs = json.loads(meta_path(run / "decoded.jsonl.gz").read_text())["inputs"]
    assert {Path(p).name for p in inputs} == {"cuts.jsonl.gz", *FILES}

    config = DecodeConfig(nbest=2, beam=4)
    assert decode_manifest(manifest, run, exported, config).skipped
    joiner = exported / "joiner.onnx"
    stat = joiner.stat()
    os.utime(joiner, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # "replaced" model file
    assert not decode_manifest(manifest, run, exported, config).skipped

    scorer = teacher_scorer(manifest, exported)
    assert [Path(p).name for p in scorer.inputs] == list(FILES)
    assert np.allclose(scorer("u0", ["a b"]), teacher.scorer(cuts)("u0", ["a b"]), atol=1e-3)


def test_missing_model_file_is_a_one_line_error(exported: Path, cuts, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "joiner.onnx").unlink()
    for attempt in (lambda: resolve_teacher(broken), lambda: load_onnx_teacher(broken)):
        with pytest.raises(ChoralError) as caught:
            attempt()
        message = str(caught.value)
        assert "joiner.onnx" in message and "\n" not in message
    manifest = _cut_manifest(cuts[:1], tmp_path / "cuts.jsonl.gz")
    result = CliRunner().invoke(app, ["decode", str(manifest), str(tmp_path / "run"), "--teacher", str(broken)])
    assert result.exit_code == 1 and "joiner.onnx" in result.stderr


@pytest.mark.filterwarnings("ignore")
def test_export_teacher_cli(teacher: TransducerTeacher, cuts, tmp_path: Path) -> None:
    checkpoint = tmp_path / "teacher.pt"
    save_teacher(teacher, checkpoint)
    result = CliRunner().invoke(app, ["export-teacher", str(checkpoint), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert all((tmp_path / "out" / name).is_file() for name in FILES)
    again = load_onnx_teacher(tmp_path / "out", beam=4, nbest=4).decode(cuts[1:2])
    assert [t for t, _, _ in again[0].nbest] == [t for t, _, _ in teacher.decode(cuts[1:2])[0].nbest]
    refused = CliRunner().invoke(app, ["export-teacher", str(tmp_path / "out"), str(tmp_path / "x")])
    assert refused.exit_code == 1 and "checkpoint file" in refused.stderr
