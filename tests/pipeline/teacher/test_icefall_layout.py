"""The icefall / sherpa-onnx layout, checked against sherpa-onnx itself.

A tiny randomly initialised stateless transducer and a tiny ``bpe.model`` are built
here and exported as icefall's ``export-onnx.py`` would; sherpa-onnx (a client no
one here wrote) and choral decode the same generated audio, and their 1-best must
agree token for token: greedy with greedy, sherpa's ``modified_beam_search``
(``max_active_paths=4``) with choral's batched beam search (``beam=4``, the
final pick length-normalised as sherpa picks). The joiner is biased so that the
random model emits many different pieces (not only blanks) and never ``<unk>``
(which sherpa-onnx drops as if blank). Text scores must be the exact RNN-T
log-likelihood of the *sentencepiece* segmentation, recomputed here by hand.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import sentencepiece as spm
import sherpa_onnx  # the test extra installs it: a failed install fails here, it does not skip
import soundfile as sf
import torch
from lhotse import Recording
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.errors import ChoralError
from choral.pipeline.manifest import write_cuts
from choral.pipeline.teacher import (
    TransducerConfig,
    TransducerTeacher,
    open_teacher,
    resolve_teacher,
    save_teacher,
)
from choral.pipeline.teacher.bpe import SentencePieceTable, train_bpe_model
from choral.pipeline.teacher.features import log_mel
from choral.pipeline.teacher.icefall_backend import IcefallTeacher, load_icefall_teacher
from choral.pipeline.teacher.icefall_export import export_icefall
from choral.pipeline.teacher.onnx_backend import PieceTable
from choral.pipeline.teacher.onnx_export import export_onnx
from choral.pipeline.teacher.registry import backend_of
from choral.pipeline.teacher.search import (
    length_normalized_best,
    modified_beam_search,
    score_texts,
)
from choral.pipeline.teacher.stateless import (
    StatelessConfig,
    StatelessDecodable,
    StatelessTransducer,
    load_stateless,
    save_stateless,
)
from choral.pipeline.teacher.stateless_backend import StatelessTeacher

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
    f0 = rng.uniform(150, 400)
    glide = f0 * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    phase = 2 * np.pi * np.cumsum(glide) / 16_000
    gate = (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > -0.3).astype(float)
    noise = rng.uniform(0.005, 0.05) * rng.standard_normal(t.size)
    audio = gate * (0.3 * np.sin(phase) + 0.1 * np.sin(3 * phase)) + noise
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
def pieces(tmp_path_factory: pytest.TempPathFactory) -> SentencePieceTable:
    return train_bpe_model(SENTENCES, 48, out=tmp_path_factory.mktemp("bpe") / "bpe.model")


def tiny_model(vocab_size: int, seed: int = 11) -> StatelessTransducer:
    """A random stateless transducer (untouched weights), small enough to decode in milliseconds."""
    torch.manual_seed(seed)
    return StatelessTransducer(StatelessConfig(vocab_size=vocab_size, conv_channels=4, encoder_input=16,
                                               encoder_hidden=16, encoder_layers=1, decoder_dim=16, joiner_dim=16,
                                               dropout=0.0)).eval()


def padded(features: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw fbank matrices as one batch, padded as sherpa-onnx pads (log 1e-10)."""
    lengths = torch.tensor([f.shape[0] for f in features])
    batch = torch.full((len(features), int(lengths.max()), features[0].shape[1]), math.log(1e-10))
    for i, f in enumerate(features):
        batch[i, : f.shape[0]] = torch.from_numpy(f)
    return batch, lengths


@torch.no_grad()
def make_it_talk(model: StatelessTransducer, features: list[np.ndarray], blank_quantile: float = 0.4) -> None:
    """Bias a random model so that its 1-best is long and varied on ``features``.

    A random LSTM's frames barely change over time, so every frame would pick the
    same piece: ``encoder_proj`` is rescaled to give each joiner input zero mean and
    unit spread over these frames. The blank's bias is then set so that blank wins
    on about ``blank_quantile`` of the frames (at the start context), and ``<unk>``
    (id 2) never does: sherpa-onnx drops an emitted ``<unk>`` as if it were blank.
    """
    encoded, lengths = model.encode(*padded(features))
    valid = torch.arange(encoded.shape[1])[None, :] < lengths[:, None]
    projected = model.encoder_proj(encoded)[valid]
    mean, spread = projected.mean(0), projected.std(0)
    model.encoder_proj.weight.div_(spread[:, None])
    model.encoder_proj.bias.sub_(mean).div_(spread)
    model.output_linear.bias.zero_()
    model.output_linear.bias[2] = -30.0
    start, _ = StatelessDecodable(model).start(1)
    logits = model.join(model.encoder_proj(encoded)[valid], start)
    gap = logits[:, 3:].max(-1).values - logits[:, 0]
    model.output_linear.bias[0] = float(gap.quantile(blank_quantile))


@pytest.fixture(scope="module")
def model(pieces: SentencePieceTable, audio: list[Path]) -> StatelessTransducer:
    model = tiny_model(len(pieces))
    make_it_talk(model, [log_mel(sf.read(path, dtype="float32")[0]) for path in audio])
    return model


@pytest.fixture(scope="module")
def exported(model: StatelessTransducer, pieces: SentencePieceTable, tmp_path_factory) -> Path:
    return export_icefall(model, pieces, tmp_path_factory.mktemp("icefall") / "model")


@pytest.fixture(scope="module")
def teacher(exported: Path) -> IcefallTeacher:
    return load_icefall_teacher(exported, beam=BEAM, nbest=BEAM)


def recognizer(directory: Path, method: str):
    return sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(directory / "encoder.onnx"), decoder=str(directory / "decoder.onnx"),
        joiner=str(directory / "joiner.onnx"), tokens=str(directory / "tokens.txt"), num_threads=1,
        sample_rate=16_000, feature_dim=80, decoding_method=method, max_active_paths=BEAM)


def sherpa_ids(directory: Path, audio: list[Path], method: str, batch: bool) -> list[list[int]]:
    """sherpa-onnx's 1-best token ids per file (one stream at a time, or all in one padded batch)."""
    ids = {}
    for line in (directory / "tokens.txt").read_text(encoding="utf-8").splitlines():
        symbol, index = line.split()
        ids[symbol.replace("\u2581", " ")] = int(index)
    rec = recognizer(directory, method)
    streams = []
    for path in audio:
        samples, rate = sf.read(path, dtype="float32")
        stream = rec.create_stream()
        stream.accept_waveform(rate, samples)
        streams.append(stream)
    if batch:
        rec.decode_streams(streams)
    else:
        for stream in streams:
            rec.decode_stream(stream)
    return [[ids[symbol] for symbol in stream.result.tokens] for stream in streams]


def test_export_is_icefall_layout(exported: Path, pieces: SentencePieceTable) -> None:
    assert sorted(p.name for p in exported.iterdir()) == sorted(FILES)
    sessions = {name: ort.InferenceSession(str(exported / name)) for name in FILES[:3]}
    signature = {name: ([(i.name, i.type, len(i.shape)) for i in s.get_inputs()], [o.name for o in s.get_outputs()])
                 for name, s in sessions.items()}
    assert signature == {
        "encoder.onnx": ([("x", "tensor(float)", 3), ("x_lens", "tensor(int64)", 1)],
                         ["encoder_out", "encoder_out_lens"]),
        "decoder.onnx": ([("y", "tensor(int64)", 2)], ["decoder_out"]),
        "joiner.onnx": ([("encoder_out", "tensor(float)", 2), ("decoder_out", "tensor(float)", 2)], ["logit"]),
    }
    assert sessions["encoder.onnx"].get_inputs()[0].shape[2] == 80
    assert sessions["decoder.onnx"].get_inputs()[0].shape[1] == 2
    meta = {name: s.get_modelmeta().custom_metadata_map for name, s in sessions.items()}
    assert meta["decoder.onnx"] == {"vocab_size": str(len(pieces)), "context_size": "2"}
    assert meta["encoder.onnx"]["model_type"] == "zipformer2" and meta["joiner.onnx"] == {"joiner_dim": "16"}
    lines = (exported / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["<blk> 0", "<sos/eos> 1", "<unk> 2"] and len(lines) == len(pieces)
    processor = spm.SentencePieceProcessor(model_file=str(exported / "bpe.model"))
    assert [line.split()[0] for line in lines] == [processor.id_to_piece(i) for i in range(len(lines))]
    assert any(line.startswith("\u2581") and len(line.split()[0]) > 1 for line in lines)
    assert backend_of(exported).name == "icefall" and resolve_teacher(exported) == exported


@pytest.mark.parametrize("batch", [False, True], ids=["one-stream", "batch"])
def test_greedy_matches_sherpa_onnx(exported: Path, teacher: IcefallTeacher, audio, cuts, batch: bool) -> None:
    theirs = sherpa_ids(exported, audio, "greedy_search", batch)
    ours = [tokens for _, tokens, _ in teacher.greedy(cuts)]
    assert ours == theirs
    frames = [int(n) for n in teacher.model.encode(teacher.features(cuts))[1]]
    # meaningful: long, varied outputs (not all blank, not one piece repeated)
    assert all(len(t) >= 0.25 * n for t, n in zip(ours, frames)), (ours, frames)
    assert len({piece for t in ours for piece in t}) >= 10 and len({tuple(t) for t in ours}) == len(ours)


@pytest.mark.parametrize("batch", [False, True], ids=["one-stream", "batch"])
def test_modified_beam_search_matches_sherpa_onnx(exported: Path, teacher: IcefallTeacher, audio, cuts,
                                                  batch: bool) -> None:
    theirs = sherpa_ids(exported, audio, "modified_beam_search", batch)
    projected, lengths, _ = teacher.model.encode(teacher.features(cuts))
    beams = modified_beam_search(teacher.model, projected, lengths, beam=BEAM)
    ours = [list(length_normalized_best(hyps, teacher.model.context_size).tokens) for hyps in beams]
    assert ours == theirs
    assert all(ours) and ours != [tokens for _, tokens, _ in teacher.greedy(cuts)]  # the beam changed something
    # the teacher's n-best (exactly rescored) holds sherpa-onnx's 1-best
    for result, best in zip(teacher.decode(cuts), theirs):
        assert best in [tokens for _, tokens, _ in result.nbest]


def rnnt_forward(log_probs: np.ndarray, ids: list[int]) -> float:
    """log P(y | x) by the textbook forward recursion over the (T, U+1) lattice, in float64."""
    frames = log_probs.shape[0]
    alpha = np.full((frames, len(ids) + 1), -np.inf)
    for t in range(frames):
        for u in range(len(ids) + 1):
            if t == 0 and u == 0:
                alpha[t, u] = 0.0
                continue
            stay = alpha[t - 1, u] + log_probs[t - 1, u, 0] if t > 0 else -np.inf
            emit = alpha[t, u - 1] + log_probs[t, u - 1, ids[u - 1]] if u > 0 else -np.inf
            alpha[t, u] = np.logaddexp(stay, emit)
    return float(alpha[-1, -1] + log_probs[-1, -1, 0])


def manual_score(directory: Path, wav: Path, text: str) -> tuple[list[int], float]:
    """Segment ``text`` with bpe.model and score it with the three ONNX sessions directly (no choral search)."""
    processor = spm.SentencePieceProcessor(model_file=str(directory / "bpe.model"))
    ids = processor.encode(text.upper())
    samples, _ = sf.read(wav, dtype="float32")
    x = log_mel(samples)[None]
    encoder, decoder, joiner = (ort.InferenceSession(str(directory / n)) for n in FILES[:3])
    enc, enc_lens = encoder.run(None, {"x": x, "x_lens": np.array([x.shape[1]], dtype=np.int64)})
    enc = enc[0, : int(enc_lens[0])]
    contexts = [([-1, 0] + ids)[u: u + 2] for u in range(len(ids) + 1)]
    dec = decoder.run(None, {"y": np.array(contexts, dtype=np.int64)})[0]
    t_grid, u_grid = np.meshgrid(np.arange(len(enc)), np.arange(len(dec)), indexing="ij")
    logits = joiner.run(None, {"encoder_out": enc[t_grid.ravel()], "decoder_out": dec[u_grid.ravel()]})[0]
    logits = logits.reshape(len(enc), len(dec), -1).astype(np.float64)
    log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    return ids, rnnt_forward(log_probs, ids)


def test_scores_use_the_sentencepiece_segmentation(exported: Path, teacher: IcefallTeacher, audio, cuts) -> None:
    tokens = teacher.tokens
    assert isinstance(tokens, SentencePieceTable)
    greedy_match = PieceTable.from_list(tokens.symbols)
    texts = ["the plain", "a lazy fox", "rain on the plain shore"]
    assert tokens.decode(tokens.encode("Rain on the PLAIN")) == "rain on the plain"  # pieces upper, text lower
    differing = [t for t in texts if greedy_match.encode(t) != tokens.encode(t)]
    assert differing, "the test needs a text that longest match segments differently"
    scores = teacher.scorer(cuts)(cuts[2].id, texts)
    for text, score in zip(texts, scores):
        ids, expected = manual_score(exported, audio[2], text)
        assert tokens.encode(text) == ids
        assert math.isclose(score, expected, rel_tol=1e-4, abs_tol=1e-3), (text, score, expected)
    # and longest match would have given another number for those texts
    projected, lengths, _ = teacher.model.encode(teacher.features(cuts[2:3]))
    other = score_texts(teacher.model, projected[0, : int(lengths[0])], [greedy_match.encode(differing[0])])[0]
    assert abs(other - scores[texts.index(differing[0])]) > 1e-2


def test_torch_model_searches_like_its_onnx_export(model: StatelessTransducer, teacher: IcefallTeacher, cuts,
                                                   pieces: SentencePieceTable, tmp_path: Path) -> None:
    features = teacher.features(cuts)
    with torch.no_grad():
        encoded, enc_lengths = model.encode(*padded(features))
    projected, onnx_lengths, _ = teacher.model.encode(features)
    assert torch.equal(enc_lengths, onnx_lengths)
    assert torch.allclose(model.encoder_proj(encoded), projected, atol=1e-4)
    torch_beams = modified_beam_search(StatelessDecodable(model), encoded, enc_lengths, beam=BEAM)
    onnx_beams = modified_beam_search(teacher.model, projected, onnx_lengths, beam=BEAM)
    assert [[h.tokens for h in b] for b in torch_beams] == [[h.tokens for h in b] for b in onnx_beams]
    # the checkpoint round-trips weights and vocabulary
    save_stateless(model, pieces, tmp_path / "stateless.pt")
    loaded, loaded_pieces = load_stateless(tmp_path / "stateless.pt")
    assert loaded_pieces.symbols == pieces.symbols and loaded_pieces.encode("the cat") == pieces.encode("the cat")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_training_step_reduces_the_loss(pieces: SentencePieceTable) -> None:
    model = tiny_model(len(pieces), seed=3).train()
    torch.manual_seed(0)
    features = torch.randn(2, 120, 80)
    lengths = torch.tensor([120, 90])
    targets = [pieces.encode("the cat sat"), pieces.encode("a fox")]
    padded = torch.zeros(2, max(map(len, targets)), dtype=torch.long)
    for i, t in enumerate(targets):
        padded[i, : len(t)] = torch.tensor(t)
    target_lengths = torch.tensor([len(t) for t in targets])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss, parts = model.loss(features, lengths, padded, target_lengths)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
        assert set(parts) == {"rnnt", "ctc"} and all(np.isfinite(v) for v in parts.values())
    assert losses[-1] < losses[0]


def test_layout_errors_name_the_file_or_key(exported: Path, tmp_path: Path, cuts) -> None:
    def error_of(directory: Path) -> str:
        with pytest.raises(ChoralError) as caught:
            resolve_teacher(directory)
        message = str(caught.value)
        assert "\n" not in message
        return message

    no_bpe = tmp_path / "no_bpe"
    shutil.copytree(exported, no_bpe)
    (no_bpe / "bpe.model").unlink()
    assert "bpe.model" in error_of(no_bpe)

    import onnx

    no_key = tmp_path / "no_key"
    shutil.copytree(exported, no_key)
    proto = onnx.load(str(no_key / "decoder.onnx"))
    kept = [p for p in proto.metadata_props if p.key != "context_size"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(no_key / "decoder.onnx"))
    assert "'context_size'" in error_of(no_key) and "decoder.onnx" in error_of(no_key)

    wrong_tokens = tmp_path / "wrong_tokens"
    shutil.copytree(exported, wrong_tokens)
    lines = (wrong_tokens / "tokens.txt").read_text(encoding="utf-8").splitlines()
    (wrong_tokens / "tokens.txt").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    assert "vocab_size" in error_of(wrong_tokens)

    neither = tmp_path / "neither"
    neither.mkdir()
    shutil.copy(exported / "tokens.txt", neither / "tokens.txt")
    message = error_of(neither)
    assert "encoder.onnx" in message and "decoder.onnx" in message

    manifest = tmp_path / "cuts.jsonl.gz"
    write_cuts(cuts[:1], manifest)
    result = CliRunner().invoke(app, ["decode", str(manifest), str(tmp_path / "run"), "--teacher", str(no_bpe)])
    assert result.exit_code == 1 and "bpe.model" in result.stderr
    assert not (tmp_path / "run" / "decoded.jsonl.gz").exists()


@pytest.mark.filterwarnings("ignore")
def test_old_layout_and_export_teacher(model: StatelessTransducer, pieces: SentencePieceTable, cuts,
                                       tmp_path: Path) -> None:
    # choral's LSTM-decoder export keeps its backend
    old = TransducerTeacher.random(TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16,
                                                    encoder_layers=1, embedding_dim=8, predictor_hidden=16,
                                                    joiner_dim=16, dropout=0.0), seed=1)
    old_dir = export_onnx(old.model, old.tokens, tmp_path / "old")
    assert backend_of(old_dir).name == "onnx"
    assert [t for t, _, _ in open_teacher(old_dir, beam=2, nbest=2).decode(cuts[:1])[0].nbest] == \
        [t for t, _, _ in TransducerTeacher(old.model, old.tokens, beam=2, nbest=2).decode(cuts[:1])[0].nbest]
    # export-teacher writes a stateless checkpoint in the icefall layout
    save_stateless(model, pieces, tmp_path / "stateless.pt")
    result = CliRunner().invoke(app, ["export-teacher", str(tmp_path / "stateless.pt"), str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(FILES)
    assert backend_of(tmp_path / "new").name == "icefall"
    again = open_teacher(tmp_path / "new", beam=BEAM, nbest=BEAM)
    assert isinstance(again, IcefallTeacher)
    assert again.greedy(cuts[:2]) == load_icefall_teacher(tmp_path / "new").greedy(cuts[:2])


def test_stateless_checkpoint_teacher_decodes_like_its_export(model: StatelessTransducer, pieces: SentencePieceTable,
                                                              teacher: IcefallTeacher, cuts, tmp_path: Path) -> None:
    checkpoint = tmp_path / "stateless.pt"
    save_stateless(model, pieces, checkpoint)
    assert backend_of(checkpoint).name == "stateless" and resolve_teacher(checkpoint) == checkpoint
    torch_teacher = open_teacher(checkpoint, beam=BEAM, nbest=BEAM)
    assert isinstance(torch_teacher, StatelessTeacher)
    assert [t for _, t, _ in torch_teacher.greedy(cuts)] == [t for _, t, _ in teacher.greedy(cuts)]
    for ours, theirs in zip(torch_teacher.decode(cuts), teacher.decode(cuts), strict=True):
        assert [tokens for _, tokens, _ in ours.nbest] == [tokens for _, tokens, _ in theirs.nbest]
        assert np.allclose([s for _, _, s in ours.nbest], [s for _, _, s in theirs.nbest], atol=1e-3)
        assert ours.frames.shape == theirs.frames.shape and np.allclose(ours.frames, theirs.frames, atol=1e-4)
    texts = ["the plain", "a lazy fox"]
    assert np.allclose(torch_teacher.scorer(cuts)("u0", texts), teacher.scorer(cuts)("u0", texts), atol=1e-3)
    # a character checkpoint still goes to the checkpoint backend
    old = tmp_path / "old.pt"
    save_teacher(TransducerTeacher.random(TransducerConfig(conv_channels=4, encoder_input=8, encoder_hidden=8,
                                                           encoder_layers=1, embedding_dim=8, predictor_hidden=8,
                                                           joiner_dim=8, dropout=0.0)), old)
    assert backend_of(old).name == "checkpoint"
