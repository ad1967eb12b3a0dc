"""NeMo transducers as sherpa-onnx runs them (``model_type="nemo_transducer"``), checked against sherpa-onnx itself.

A tiny randomly initialised transducer in NeMo's shape is built here and exported
as NeMo and sherpa-onnx's scripts export one. NeMo's RNN-T pieces, small: an
encoder over channels-first features ``(N, C, T)`` (two strided 1-D convolutions,
subsampling 4); a prediction network with state (an embedding whose last row, the
blank, is zero, then an LSTM); a joint network (encoder and decoder projections,
ReLU, an output layer over the vocabulary plus the blank, which comes last). The
export reproduces the interface a real NeMo export gives sherpa-onnx: input and
output names, the ``(N, D, T)`` / ``(N, H, U)`` layouts, int32 targets, and the
decoder's second LSTM state pinned to batch 1 (NeMo's tracer leaves it static);
the encoder carries the metadata sherpa-onnx's export scripts add. ``tokens.txt``
lists the tokenizer's pieces and ``<blk>`` last, ``bpe.model`` is the tokenizer.

sherpa-onnx and choral's ``nemo`` backend then decode the same generated audio and
their 1-best must agree token for token: greedy with greedy, and sherpa-onnx's
``modified_beam_search`` (``max_active_paths=4``) with choral's NeMo beam search
(``beam=4``). The joint's blank bias is set so that the random model emits many
different pieces (often several per frame) and never ``<unk>``.
"""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sentencepiece as spm
import sherpa_onnx  # the test extra installs it: a failed install fails here, it does not skip
import soundfile as sf
import torch
from lhotse import Recording
from torch import nn
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.errors import ChoralError
from choral.pipeline.manifest import write_cuts
from choral.pipeline.teacher import open_teacher, resolve_teacher
from choral.pipeline.teacher.features import load_audio
from choral.pipeline.teacher.nemo_backend import (
    NemoTeacher,
    librosa_mel_bank,
    load_nemo_teacher,
    nemo_features,
    nemo_greedy_search,
)
from choral.pipeline.teacher.registry import backend_of
from choral.pipeline.teacher.search import score_texts


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> bytes:
    """A sentencepiece tokenizer as NeMo trains one: lower-case text, ``<unk>`` at id 0, no bos/eos, no blank."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(list(texts)), model_writer=buffer, vocab_size=vocab_size,
                                   model_type="bpe", character_coverage=1.0, unk_id=0, bos_id=-1, eos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2, num_threads=1)
    return buffer.getvalue()


class Encoder(nn.Module):
    """``audio_signal (N, C, T)``, ``length (N,)`` -> ``outputs (N, D, T')``, ``encoded_lengths (N,)``."""

    def __init__(self, feat_dim: int, dim: int) -> None:
        super().__init__()
        self.first = nn.Conv1d(feat_dim, dim, 3, stride=2, padding=1)
        self.second = nn.Conv1d(dim, dim, 3, stride=2, padding=1)

    @staticmethod
    def _masked(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return x * (torch.arange(x.shape[2])[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = length
        x = audio_signal
        for conv in (self.first, self.second):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            x = self._masked(torch.tanh(conv(x)), lengths)  # padded frames stay 0, as in one utterance alone
        return x, lengths


class Decoder(nn.Module):
    """``targets (N, U)`` int32, ``target_length``, ``h``, ``c`` -> ``outputs (N, H, U)``, lengths, next states."""

    def __init__(self, vocab_size: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, hidden, padding_idx=vocab_size)  # the blank is zero
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)

    def forward(self, targets: torch.Tensor, target_length: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h_next, c_next) = self.lstm(self.embedding(targets.long()), (h, c))
        return out.transpose(1, 2), target_length, h_next, c_next


class Joint(nn.Module):
    """``encoder_outputs (N, D, T)``, ``decoder_outputs (N, H, U)`` -> ``outputs (N, T, U, V + 1)``."""

    def __init__(self, enc_dim: int, pred_dim: int, joint_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.enc = nn.Linear(enc_dim, joint_dim)
        self.pred = nn.Linear(pred_dim, joint_dim)
        self.out = nn.Linear(joint_dim, vocab_size + 1)

    def forward(self, encoder_outputs: torch.Tensor, decoder_outputs: torch.Tensor) -> torch.Tensor:
        f = self.enc(encoder_outputs.transpose(1, 2))[:, :, None, :]
        g = self.pred(decoder_outputs.transpose(1, 2))[:, None, :, :]
        return self.out(torch.relu(f + g))


class TinyNemo(nn.Module):
    def __init__(self, vocab_size: int, feat_dim: int = 80, enc_dim: int = 24, pred_hidden: int = 16,
                 pred_layers: int = 1, joint_dim: int = 24) -> None:
        super().__init__()
        self.vocab_size, self.feat_dim = vocab_size, feat_dim
        self.pred_hidden, self.pred_layers = pred_hidden, pred_layers
        self.encoder = Encoder(feat_dim, enc_dim)
        self.decoder = Decoder(vocab_size, pred_hidden, pred_layers)
        self.joint = Joint(enc_dim, pred_hidden, joint_dim, vocab_size)


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, str(path))


@torch.no_grad()
def export_nemo(model: TinyNemo, tokenizer: bytes, out: Path, *, normalize_type: str = "per_feature",
                pinned_state: bool = True, metadata: dict[str, str] | None = None) -> Path:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx``, ``tokens.txt`` and ``bpe.model`` into ``out``.

    ``pinned_state``: the decoder's second state input keeps a static batch of 1,
    as NeMo's own export leaves it. ``metadata`` replaces the encoder's metadata.
    """
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(tokenizer)
    assert processor.GetPieceSize() == model.vocab_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.randn(2, model.feat_dim, 37)
        torch.onnx.export(model.encoder, (x, torch.tensor([37, 20])), str(out / "encoder.onnx"),
                          input_names=["audio_signal", "length"], output_names=["outputs", "encoded_lengths"],
                          dynamic_axes={"audio_signal": {0: "N", 2: "T"}, "length": {0: "N"},
                                        "outputs": {0: "N", 2: "T_out"}, "encoded_lengths": {0: "N"}},
                          opset_version=17, dynamo=False)
        batch = 1 if pinned_state else 2
        h = torch.zeros(model.pred_layers, batch, model.pred_hidden)
        targets = torch.zeros(batch, 1, dtype=torch.int32)
        state_axes = {"states.1": {1: "N"}, "states": {1: "N"}}
        if not pinned_state:
            state_axes.update({"onnx::LSTM_3": {1: "N"}, "74": {1: "N"}})
        torch.onnx.export(model.decoder, (targets, torch.ones(batch, dtype=torch.int32), h, h.clone()),
                          str(out / "decoder.onnx"),
                          input_names=["targets", "target_length", "states.1", "onnx::LSTM_3"],
                          output_names=["outputs", "prednet_lengths", "states", "74"],
                          dynamic_axes={"targets": {0: "N", 1: "U"}, "target_length": {0: "N"},
                                        "outputs": {0: "N", 2: "U"}, "prednet_lengths": {0: "N"}, **state_axes},
                          opset_version=17, dynamo=False)
        torch.onnx.export(model.joint, (torch.randn(2, model.encoder.first.out_channels, 3),
                                        torch.randn(2, model.pred_hidden, 4)), str(out / "joiner.onnx"),
                          input_names=["encoder_outputs", "decoder_outputs"], output_names=["outputs"],
                          dynamic_axes={"encoder_outputs": {0: "N", 2: "T"}, "decoder_outputs": {0: "N", 2: "U"},
                                        "outputs": {0: "N", 1: "T", 2: "U"}},
                          opset_version=17, dynamo=False)
    _add_metadata(out / "encoder.onnx", metadata if metadata is not None else {
        "vocab_size": str(model.vocab_size), "normalize_type": normalize_type,
        "pred_rnn_layers": str(model.pred_layers), "pred_hidden": str(model.pred_hidden),
        "subsampling_factor": "4", "model_type": "EncDecRNNTBPEModel", "version": "1", "model_author": "choral tests",
        "comment": "a tiny random NeMo-shaped transducer"})
    lines = [f"{processor.IdToPiece(i)} {i}" for i in range(model.vocab_size)] + [f"<blk> {model.vocab_size}"]
    (out / "tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "bpe.model").write_bytes(tokenizer)
    return out


# --- the fixtures ---------------------------------------------------------------------------------------------------

SENTENCES = [
    "the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
    "peter piper picked a peck of pickled peppers", "how much wood would a woodchuck chuck",
    "the rain in spain stays mainly in the plain", "cats and dogs sat together", "the shore was lazy and warm",
]
BEAM = 4  # choral's beam = sherpa-onnx's max_active_paths
FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt", "bpe.model")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_utterance(path: Path, seconds: float, seed: int) -> Path:
    """Tones gliding in pitch, switched on and off, over noise: a few seconds at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    glide = rng.uniform(150, 400) * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    phase = 2 * np.pi * np.cumsum(glide) / 16_000
    gate = (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > -0.3).astype(float)
    audio = gate * (0.3 * np.sin(phase) + 0.1 * np.sin(3 * phase)) + rng.uniform(0.005, 0.05) * rng.standard_normal(
        t.size)
    sf.write(path, audio.astype(np.float32), 16_000)
    return path


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("audio")
    return [write_utterance(folder / f"u{i}.wav", seconds, seed=i)
            for i, seconds in enumerate([2.3, 1.2, 3.4, 2.8, 1.7])]


@pytest.fixture(scope="module")
def cuts(audio: list[Path]):
    return [Recording.from_file(path, recording_id=path.stem).to_cut() for path in audio]


@pytest.fixture(scope="module")
def tokenizer() -> bytes:
    return train_tokenizer(SENTENCES, 40)


@torch.no_grad()
def make_it_talk(model: TinyNemo, features: list[np.ndarray], blank_quantile: float = 0.55) -> None:
    """Bias a random model so that its 1-best is long and varied: each joint input gets zero mean and unit spread
    over these utterances' frames (and the decoder's side a comparable spread, so an emitted piece changes the next
    choice), the blank's bias makes blank win on about ``blank_quantile`` of the frames at the start, and ``<unk>``
    (id 0) never wins."""
    encoded = torch.cat([model.encoder(torch.from_numpy(f.T)[None], torch.tensor([f.shape[0]]))[0][0].T
                         for f in features])
    f = model.joint.enc(encoded)
    model.joint.enc.weight.div_(f.std(0)[:, None])
    model.joint.enc.bias.sub_(f.mean(0)).div_(f.std(0))
    h = torch.zeros(model.pred_layers, 1, model.pred_hidden)
    symbols = torch.arange(model.vocab_size + 1, dtype=torch.int32)[:, None]
    g_out = model.decoder(symbols, torch.ones(len(symbols), dtype=torch.int32), h.expand(-1, len(symbols), -1),
                          h.expand(-1, len(symbols), -1))[0][:, :, 0]
    g = model.joint.pred(g_out)
    model.joint.pred.weight.mul_(1.5 / g.std(0)[:, None])
    model.joint.pred.bias.sub_(model.joint.pred(g_out).mean(0))
    model.joint.out.bias.zero_()
    model.joint.out.bias[0] = -30.0
    start = model.joint.pred(g_out[-1:])  # after the blank, the first input
    logits = model.joint.out(torch.relu(model.joint.enc(encoded) + start))
    gap = logits[:, 1:-1].max(-1).values - logits[:, -1]
    model.joint.out.bias[-1] = float(gap.quantile(blank_quantile))


@pytest.fixture(scope="module")
def model(tokenizer: bytes, audio: list[Path]) -> TinyNemo:
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(tokenizer)
    torch.manual_seed(5)
    model = TinyNemo(processor.GetPieceSize()).eval()
    make_it_talk(model, [nemo_features(sf.read(path, dtype="float32")[0]) for path in audio])
    return model


@pytest.fixture(scope="module")
def exported(model: TinyNemo, tokenizer: bytes, tmp_path_factory) -> Path:
    return export_nemo(model, tokenizer, tmp_path_factory.mktemp("nemo") / "model")


@pytest.fixture(scope="module")
def teacher(exported: Path) -> NemoTeacher:
    return load_nemo_teacher(exported, beam=BEAM, nbest=BEAM)


def sherpa_ids(directory: Path, audio: list[Path], method: str, batch: bool) -> list[list[int]]:
    """sherpa-onnx's 1-best token ids per file (``nemo_transducer``; one stream at a time, or one batch)."""
    ids = {}
    for line in (directory / "tokens.txt").read_text(encoding="utf-8").splitlines():
        symbol, index = line.split()
        ids[symbol.replace("\u2581", " ")] = int(index)
    recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(directory / "encoder.onnx"), decoder=str(directory / "decoder.onnx"),
        joiner=str(directory / "joiner.onnx"), tokens=str(directory / "tokens.txt"), num_threads=1,
        sample_rate=16_000, feature_dim=80, decoding_method=method, max_active_paths=BEAM,
        model_type="nemo_transducer")
    streams = []
    for path in audio:
        samples, rate = sf.read(path, dtype="float32")
        stream = recognizer.create_stream()
        stream.accept_waveform(rate, samples)
        streams.append(stream)
    if batch:
        recognizer.decode_streams(streams)
    else:
        for stream in streams:
            recognizer.decode_stream(stream)
    return [[ids[symbol] for symbol in stream.result.tokens] for stream in streams]


# --- the tests ------------------------------------------------------------------------------------------------------

def test_export_is_nemo_layout(exported: Path, model: TinyNemo) -> None:
    assert sorted(p.name for p in exported.iterdir()) == sorted(FILES)
    sessions = {name: ort.InferenceSession(str(exported / name)) for name in FILES[:3]}
    signature = {name: [(i.name, i.type, len(i.shape)) for i in s.get_inputs()] for name, s in sessions.items()}
    assert signature == {
        "encoder.onnx": [("audio_signal", "tensor(float)", 3), ("length", "tensor(int64)", 1)],
        "decoder.onnx": [("targets", "tensor(int32)", 2), ("target_length", "tensor(int32)", 1),
                         ("states.1", "tensor(float)", 3), ("onnx::LSTM_3", "tensor(float)", 3)],
        "joiner.onnx": [("encoder_outputs", "tensor(float)", 3), ("decoder_outputs", "tensor(float)", 3)],
    }
    assert sessions["encoder.onnx"].get_inputs()[0].shape[1] == 80
    assert sessions["decoder.onnx"].get_inputs()[3].shape == [1, 1, model.pred_hidden]  # pinned, as NeMo leaves it
    meta = sessions["encoder.onnx"].get_modelmeta().custom_metadata_map
    assert meta["vocab_size"] == str(model.vocab_size) and meta["normalize_type"] == "per_feature"
    lines = (exported / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "<unk> 0" and lines[-1] == f"<blk> {model.vocab_size}"
    assert backend_of(exported).name == "nemo" and resolve_teacher(exported) == exported


def test_features_are_sherpa_onnx_nemo_features(audio: list[Path]) -> None:
    """The mel bank is librosa's Slaney bank (a closed form checked at a few points) and per_feature normalises."""
    bank = librosa_mel_bank(80).numpy()
    assert bank.shape == (257, 80) and (bank >= 0).all() and (bank.sum(0) > 0).all()
    # Slaney scale: 0..1000 Hz linear; the first filter rises from 0 Hz and its peak is 2 / (right - left)
    assert bank[0, 0] == 0 and bank[:, 0].argmax() >= 1
    samples = sf.read(audio[0], dtype="float32")[0]
    normalised, raw = nemo_features(samples), nemo_features(samples, normalize="")
    assert normalised.shape == raw.shape == (round(len(samples) / 160), 80)
    assert np.allclose(normalised.mean(0), 0, atol=1e-4) and np.allclose(normalised.std(0), 1, atol=1e-3)
    assert np.allclose((raw - raw.mean(0)) / (raw.std(0) + 1e-5), normalised, atol=1e-4)


@pytest.mark.parametrize("batch", [False, True], ids=["one-stream", "batch"])
def test_greedy_matches_sherpa_onnx(exported: Path, teacher: NemoTeacher, audio, cuts, batch: bool) -> None:
    theirs = sherpa_ids(exported, audio, "greedy_search", batch)
    ours = [tokens for _, tokens, _ in teacher.greedy(cuts)]
    assert ours == theirs
    frames = [int(n) for n in teacher.model.encode(teacher.features(cuts))[1]]
    # meaningful: long, varied outputs, several pieces on some frames (NeMo's greedy emits up to 10 per frame)
    assert all(len(t) >= 0.3 * n for t, n in zip(ours, frames)), (ours, frames)
    assert len({piece for t in ours for piece in t}) >= 10 and len({tuple(t) for t in ours}) == len(ours)
    assert sum(len(t) for t in ours) > sum(frames) * 0.6


@pytest.mark.parametrize("batch", [False, True], ids=["one-stream", "batch"])
def test_modified_beam_search_matches_sherpa_onnx(exported: Path, teacher: NemoTeacher, audio, cuts,
                                                  batch: bool) -> None:
    theirs = sherpa_ids(exported, audio, "modified_beam_search", batch)
    ours = [[t - 1 for t in beam[0].tokens] for beam in teacher.beam_features(teacher.features(cuts))]
    assert ours == theirs
    assert all(ours) and ours != [tokens for _, tokens, _ in teacher.greedy(cuts)]  # the beam changed something
    # the teacher's n-best (distinct outputs, exactly rescored) holds sherpa-onnx's 1-best, in NeMo's ids
    for result, best in zip(teacher.decode(cuts), theirs):
        assert best in [tokens for _, tokens, _ in result.nbest]
        assert len({text for text, _, _ in result.nbest}) == len(result.nbest)


def rnnt_forward(log_probs: np.ndarray, ids: list[int], blank: int) -> float:
    """log P(y | x) by the textbook forward recursion over the (T, U+1) lattice, in float64."""
    frames = log_probs.shape[0]
    alpha = np.full((frames, len(ids) + 1), -np.inf)
    for t in range(frames):
        for u in range(len(ids) + 1):
            if t == 0 and u == 0:
                alpha[t, u] = 0.0
                continue
            stay = alpha[t - 1, u] + log_probs[t - 1, u, blank] if t > 0 else -np.inf
            emit = alpha[t, u - 1] + log_probs[t, u - 1, ids[u - 1]] if u > 0 else -np.inf
            alpha[t, u] = np.logaddexp(stay, emit)
    return float(alpha[-1, -1] + log_probs[-1, -1, blank])


def test_scores_use_the_tokenizer_segmentation(exported: Path, model: TinyNemo, teacher: NemoTeacher, audio,
                                               cuts) -> None:
    """A text's score is the exact RNN-T log-likelihood of the tokenizer's pieces, recomputed with the three ONNX
    models and NeMo's ids (blank last) by hand."""
    processor = spm.SentencePieceProcessor(model_file=str(exported / "bpe.model"))
    texts = ["the plain", "a lazy fox", "rain on the plain shore"]
    scores = teacher.scorer(cuts)(cuts[2].id, texts)
    encoder, decoder, joiner = (ort.InferenceSession(str(exported / n)) for n in FILES[:3])
    x = nemo_features(load_audio(cuts[2]))
    enc, enc_len = encoder.run(None, {"audio_signal": x.T[None], "length": np.array([x.shape[0]])})
    enc = enc[:, :, : int(enc_len[0])]
    for text, score in zip(texts, scores):
        ids = processor.encode(text)
        assert [t - 1 for t in teacher.tokens.encode(text)] == ids and teacher.tokens.decode(
            [t + 1 for t in ids]) == text
        zeros = np.zeros((model.pred_layers, 1, model.pred_hidden), dtype=np.float32)
        dec = decoder.run(None, {"targets": np.array([[model.vocab_size, *ids]], dtype=np.int32),
                                 "target_length": np.array([len(ids) + 1], dtype=np.int32),
                                 "states.1": zeros, "onnx::LSTM_3": zeros})[0]
        logits = joiner.run(None, {"encoder_outputs": enc, "decoder_outputs": dec})[0][0].astype(np.float64)
        log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        expected = rnnt_forward(log_probs, ids, blank=model.vocab_size)
        assert np.isclose(score, expected, rtol=1e-4, atol=1e-3), (text, score, expected)


def test_batched_state_export_decodes_the_same(model: TinyNemo, tokenizer: bytes, teacher: NemoTeacher, cuts,
                                               tmp_path: Path) -> None:
    """A decoder whose states take any batch (one call per step) gives what the pinned one (a call per row) does."""
    other = load_nemo_teacher(export_nemo(model, tokenizer, tmp_path / "batched", pinned_state=False), beam=BEAM,
                              nbest=BEAM)
    assert other.model.layout.state_batch and not teacher.model.layout.state_batch
    assert other.greedy(cuts) == teacher.greedy(cuts)
    for ours, theirs in zip(other.decode(cuts), teacher.decode(cuts), strict=True):
        assert [t for _, t, _ in ours.nbest] == [t for _, t, _ in theirs.nbest]
        assert np.allclose([s for _, _, s in ours.nbest], [s for _, _, s in theirs.nbest], atol=1e-4)
    # the batched greedy search is the per-utterance one
    features = teacher.features(cuts)
    alone = [nemo_greedy_search(teacher.model, *teacher.model.encode([f])[:2])[0].tokens for f in features]
    assert [tuple(t + 1 for t in tokens) for _, tokens, _ in teacher.greedy(cuts)] == alone
    encoded, lengths, _ = teacher.model.encode(features[:1])
    assert len(score_texts(teacher.model, encoded[0, : int(lengths[0])], [[3, 4], []])) == 2


def test_decode_stage_and_open_teacher(exported: Path, cuts, tmp_path: Path) -> None:
    opened = open_teacher(exported, beam=BEAM, nbest=2)
    assert isinstance(opened, NemoTeacher)
    manifest = tmp_path / "cuts.jsonl.gz"
    write_cuts(cuts[:2], manifest)
    result = CliRunner().invoke(app, ["decode", str(manifest), str(tmp_path / "run"), "--teacher", str(exported),
                                      "--beam", str(BEAM), "--nbest", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "decoded.jsonl.gz").is_file()


def _edited(exported: Path, target: Path, drop: str | None = None, **changes: str) -> Path:
    """A copy of the export with one encoder metadata key dropped or changed."""
    shutil.copytree(exported, target)
    proto = onnx.load(str(target / "encoder.onnx"))
    entries = {p.key: p.value for p in proto.metadata_props if p.key != drop}
    entries.update(changes)
    _add_metadata(target / "encoder.onnx", entries)
    return target


def test_layout_errors_name_the_file_or_key(exported: Path, tmp_path: Path, cuts) -> None:
    def error_of(directory: Path) -> str:
        with pytest.raises(ChoralError) as caught:
            resolve_teacher(directory)
        message = str(caught.value)
        assert "\n" not in message
        return message

    for key in ("vocab_size", "pred_hidden", "pred_rnn_layers", "subsampling_factor"):
        message = error_of(_edited(exported, tmp_path / f"no_{key}", drop=key))
        assert f"'{key}'" in message and "encoder.onnx" in message
    assert "normalize_type='all_features'" in error_of(_edited(exported, tmp_path / "norm",
                                                               normalize_type="all_features"))
    assert "pred_hidden=99" in error_of(_edited(exported, tmp_path / "hidden", pred_hidden="99"))
    assert "TDT" in error_of(_edited(exported, tmp_path / "tdt", url="https://huggingface.co/nvidia/parakeet-tdt"))

    blank_first = tmp_path / "blank_first"
    shutil.copytree(exported, blank_first)
    lines = (blank_first / "tokens.txt").read_text(encoding="utf-8").splitlines()
    (blank_first / "tokens.txt").write_text("\n".join(["<blk> 0", *[f"{ln.split()[0]} {i + 1}" for i, ln in
                                                                      enumerate(lines[:-1])]]) + "\n")
    assert "last token must be the blank" in error_of(blank_first)

    no_bpe = tmp_path / "no_bpe"
    shutil.copytree(exported, no_bpe)
    (no_bpe / "bpe.model").unlink()
    assert "bpe.model" in error_of(no_bpe) and "tokenizer.model" in error_of(no_bpe)

    no_decoder = tmp_path / "no_decoder"
    shutil.copytree(exported, no_decoder)
    (no_decoder / "decoder.onnx").unlink()
    assert backend_of(no_decoder).name == "nemo"  # recognised by tokens.txt's blank-last order
    assert "lacks decoder.onnx (NeMo's layout" in error_of(no_decoder)

    no_joiner = tmp_path / "no_joiner"
    shutil.copytree(exported, no_joiner)
    (no_joiner / "joiner.onnx").unlink()
    assert "joiner.onnx" in error_of(no_joiner) and "NeMo" in error_of(no_joiner)

    manifest = tmp_path / "cuts.jsonl.gz"
    write_cuts(cuts[:1], manifest)
    result = CliRunner().invoke(app, ["decode", str(manifest), str(tmp_path / "run"), "--teacher",
                                      str(tmp_path / "no_pred_hidden")])
    assert result.exit_code == 1 and "'pred_hidden'" in result.stderr
    assert not (tmp_path / "run" / "decoded.jsonl.gz").exists()
