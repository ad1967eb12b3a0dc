from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import MonoCut, Recording

from choral.pipeline.teacher import (
    AudioError,
    TokenTable,
    Transducer,
    TransducerConfig,
    TransducerTeacher,
    load_teacher,
    save_teacher,
)
from choral.pipeline.teacher.features import batch_features, cut_features
from choral.pipeline.teacher.layers import subsampled_lengths
from choral.pipeline.teacher.search import greedy_search, modified_beam_search, score_texts

TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=1, embedding_dim=8,
                        predictor_hidden=16, joiner_dim=16, dropout=0.0)


def write_tone(path: Path, seconds: float, freq: float, rate: int = 16_000, seed: int = 0) -> Path:
    """A tone with a little noise: enough structure for features, deterministic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    sf.write(path, (audio + 0.01 * rng.standard_normal(t.size)).astype(np.float32), rate)
    return path


def cut_from(path: Path, cut_id: str) -> MonoCut:
    recording = Recording.from_file(path, recording_id=cut_id)
    return recording.to_cut()


@pytest.fixture(scope="module")
def cuts(tmp_path_factory: pytest.TempPathFactory) -> list[MonoCut]:
    folder = tmp_path_factory.mktemp("audio")
    specs = [(1.3, 220.0), (0.7, 440.0), (2.1, 330.0)]
    return [cut_from(write_tone(folder / f"u{i}.wav", s, f, seed=i), f"u{i}") for i, (s, f) in enumerate(specs)]


@pytest.fixture(scope="module")
def teacher() -> TransducerTeacher:
    return TransducerTeacher.random(TINY, seed=1, beam=4, nbest=4)


def test_tokens_round_trip() -> None:
    table = TokenTable()
    assert len(table) == 29 and table.symbols[0] == "<blk>"
    ids = table.encode("Don't call 42, OK?")
    assert 0 not in ids
    assert table.decode(ids) == "don't call four two ok"
    assert table.decode(table.encode("café")) == "caf"


def test_model_shapes(teacher: TransducerTeacher) -> None:
    model = teacher.model
    features = torch.randn(2, 37, 80)
    encoded, lengths = model.encode(features, torch.tensor([37, 20]))
    assert encoded.shape == (2, 10, model.encoder_dim)
    assert lengths.tolist() == [10, 5] == subsampled_lengths(torch.tensor([37, 20])).tolist()
    predicted, _ = model.predict(torch.zeros(2, 4, dtype=torch.long))
    assert model.lattice_log_probs(encoded, predicted).shape == (2, 10, 4, 29)
    loss, parts = model.loss(features, torch.tensor([37, 20]), torch.tensor([[3, 4, 5], [6, 0, 0]]),
                             torch.tensor([3, 1]))
    assert torch.isfinite(loss) and set(parts) == {"rnnt", "ctc"}


def test_default_size_is_about_three_million() -> None:
    from choral.pipeline.teacher import parameter_count

    assert 2_500_000 < parameter_count(Transducer()) < 4_000_000


def test_features_and_resampling(cuts: list[MonoCut], tmp_path: Path) -> None:
    features = cut_features(cuts[0])
    assert features.shape[1] == 80 and abs(features.shape[0] - 130) <= 2
    slow = cut_from(write_tone(tmp_path / "slow.wav", 1.3, 220.0, rate=8000), "slow")
    assert abs(cut_features(slow).shape[0] - features.shape[0]) <= 2


def test_missing_audio_is_an_audio_error(cuts: list[MonoCut], tmp_path: Path) -> None:
    gone = cut_from(write_tone(tmp_path / "gone.wav", 0.5, 200.0), "gone")
    (tmp_path / "gone.wav").unlink()
    with pytest.raises(AudioError) as caught:
        batch_features([cuts[0], gone])
    assert list(caught.value.failures) == ["gone"]


def encode(teacher: TransducerTeacher, cuts: list[MonoCut]):
    return teacher.encode_features(batch_features(cuts))


def test_greedy_equals_beam_one(teacher: TransducerTeacher, cuts: list[MonoCut]) -> None:
    encoded, lengths = encode(teacher, cuts)
    greedy = greedy_search(teacher.model, encoded, lengths)
    beam = modified_beam_search(teacher.model, encoded, lengths, beam=1)
    for g, b in zip(greedy, beam):
        assert len(b) == 1
        assert b[0].tokens == g.tokens
        assert b[0].score == pytest.approx(g.score, abs=1e-4)


def test_beam_nbest_sorted_distinct_and_batch_independent(teacher: TransducerTeacher, cuts: list[MonoCut]) -> None:
    encoded, lengths = encode(teacher, cuts)
    batched = modified_beam_search(teacher.model, encoded, lengths, beam=4)
    for i, hyps in enumerate(batched):
        assert 1 <= len(hyps) <= 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({h.tokens for h in hyps}) == len(hyps)
        alone = modified_beam_search(teacher.model, encoded[i: i + 1, : int(lengths[i])], lengths[i: i + 1], beam=4)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in hyps]
        assert np.allclose([h.score for h in alone], scores, atol=1e-3)


def test_nbest_scores_are_exact_lattice_log_likelihoods(teacher: TransducerTeacher, cuts: list[MonoCut]) -> None:
    encoded, lengths = encode(teacher, cuts)
    for i, result in enumerate(teacher.decode(cuts)):
        frames = encoded[i, : int(lengths[i])]
        exact = score_texts(teacher.model, frames, [tokens for _, tokens, _ in result.nbest] + [[5, 6, 7]])
        for (_, _, score), direct in zip(result.nbest, exact):
            assert score >= direct - 1e-6  # equal, or more when token sequences reading alike were pooled
            assert score <= 0.0
        assert np.isfinite(exact[-1]) and exact[-1] < 0


def test_decode_and_scorer(teacher: TransducerTeacher, cuts: list[MonoCut]) -> None:
    results = teacher.decode(cuts)
    assert len(results) == 3
    for result in results:
        texts = [text for text, _, _ in result.nbest]
        assert len(set(texts)) == len(texts) and 1 <= len(texts) <= 4
        assert [s for _, _, s in result.nbest] == sorted((s for _, _, s in result.nbest), reverse=True)
        assert result.frames.ndim == 2 and result.frames.shape[1] == teacher.model.encoder_dim
        assert np.allclose(result.embedding, result.frames.mean(axis=0), atol=1e-6)
    scorer = teacher.scorer(cuts)
    best_text = results[0].nbest[0][0]
    (score,) = scorer("u0", [best_text])
    assert score >= results[0].nbest[0][2] - 1e-3
    with pytest.raises(KeyError):
        scorer("nope", ["a"])


def test_checkpoint_round_trip(teacher: TransducerTeacher, cuts: list[MonoCut], tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    save_teacher(teacher, path)
    loaded = load_teacher(path, beam=4, nbest=4)
    assert loaded.model.config == teacher.model.config and loaded.tokens.symbols == teacher.tokens.symbols
    assert [r.nbest for r in loaded.decode(cuts)] == [r.nbest for r in teacher.decode(cuts)]


def test_tiny_model_overfits_two_utterances(cuts: list[MonoCut]) -> None:
    torch.manual_seed(0)
    model = Transducer(TINY)
    model.train()
    table = TokenTable()
    texts = ["hi there", "yes"]
    features = batch_features(cuts[:2])
    lengths = torch.tensor([f.shape[0] for f in features])
    batch = torch.zeros(2, int(lengths.max()), 80)
    for i, f in enumerate(features):
        batch[i, : f.shape[0]] = torch.from_numpy(f)
    encoded_targets = [table.encode(t) for t in texts]
    targets = torch.zeros(2, max(map(len, encoded_targets)), dtype=torch.long)
    for i, ids in enumerate(encoded_targets):
        targets[i, : len(ids)] = torch.tensor(ids)
    target_lengths = torch.tensor([len(ids) for ids in encoded_targets])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        optimizer.zero_grad()
        loss, parts = model.loss(batch, lengths, targets, target_lengths, ctc_weight=0.3)
        loss.backward()
        optimizer.step()
        losses.append(parts["rnnt"])
    assert losses[-1] < 0.25 * losses[0], losses[::10]
