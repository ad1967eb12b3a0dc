"""score_pairs against the per-utterance reference (search.score_texts) on tiny random teachers, through every
path: the sigmoid-form tanh joiner or the model's own join, predictor stepped per trie level or run along whole
texts, stateless rows shared, and passes / joiner chunks of any size."""

import random

import numpy as np
import pytest
import torch

from choral.pipeline.teacher.model import Transducer, TransducerConfig
from choral.pipeline.teacher.scoring import ScoreOptions, score_pairs, tanh_output_layer
from choral.pipeline.teacher.search import TorchDecodable, score_texts
from choral.pipeline.teacher.stateless import StatelessConfig, StatelessDecodable, StatelessTransducer

VOCAB = 9


class OpaqueJoiner:
    """A model whose joiner is not recognised and whose predictor cannot be stepped: the generic paths."""

    def __init__(self, inner: TorchDecodable) -> None:
        self.inner = inner

    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.inner.project_encoder(encoded)

    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        return self.inner.join(enc_projected, pred_projected)

    def predict_along(self, targets: torch.Tensor) -> torch.Tensor:
        return self.inner.predict_along(targets)


def _lstm() -> TorchDecodable:
    torch.manual_seed(3)
    config = TransducerConfig(vocab_size=VOCAB, conv_channels=4, encoder_input=16, encoder_hidden=8,
                              encoder_layers=1, embedding_dim=8, predictor_hidden=16, joiner_dim=16, dropout=0.0)
    return TorchDecodable(Transducer(config).eval())


def _stateless() -> StatelessDecodable:
    torch.manual_seed(4)
    config = StatelessConfig(vocab_size=VOCAB, conv_channels=4, encoder_input=16, encoder_hidden=8,
                             encoder_layers=1, decoder_dim=16, context_size=2, joiner_dim=16, dropout=0.0)
    return StatelessDecodable(StatelessTransducer(config).eval())


def _utterances(encoder_dim: int) -> tuple[list[torch.Tensor], list[list[list[int]]]]:
    """Frames of 5 utterances and texts with shared prefixes, shared bigrams, repeats, an empty one."""
    rng = random.Random(0)
    generator = torch.Generator().manual_seed(0)
    frames = [torch.randn(t, encoder_dim, generator=generator) * 2 for t in (7, 1, 12, 3, 9)]
    texts = []
    for _ in frames:
        stem = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 6))]
        own = [stem + [rng.randrange(1, VOCAB) for _ in range(rng.randrange(0, 5))] for _ in range(4)]
        own += [[], stem[:1], own[0], [1, 2, 1, 2, 1, 2], [3, 1, 2, 1, 2]]  # the last two share contexts "1 2"
        texts.append(own)
    return frames, texts


def _check(model, reference, options: ScoreOptions, atol: float) -> None:
    encoder_dim = reference.model.encoder_dim
    frames, texts = _utterances(encoder_dim)
    with torch.inference_mode():
        projected = [model.project_encoder(f) for f in frames]
    pairs = [(i, tokens) for i, own in enumerate(texts) for tokens in own]
    random.Random(1).shuffle(pairs)
    got = score_pairs(model, projected, pairs, options)
    with torch.inference_mode():
        expected = {(i, tuple(tokens)): value for i, own in enumerate(texts)
                    for tokens, value in zip(own, score_texts(reference, frames[i], own))}
    want = [expected[(i, tuple(tokens))] for i, tokens in pairs]
    assert np.all(np.isfinite(got))
    assert np.abs(np.array(got) - np.array(want)).max() < atol


@pytest.mark.parametrize("options", [ScoreOptions(), ScoreOptions(elements=1, rows=1),
                                     ScoreOptions(rows=5), ScoreOptions(dtype="float32")])
def test_lstm_teacher_matches_reference(options) -> None:
    model = _lstm()
    assert tanh_output_layer(model) is not None
    _check(model, model, options, atol=1e-4 if options.dtype == "float32" else 1e-5)


def test_generic_join_and_predict_along_match_reference() -> None:
    model = _lstm()
    opaque = OpaqueJoiner(model)
    assert tanh_output_layer(opaque) is None  # type: ignore[arg-type]
    _check(opaque, model, ScoreOptions(), atol=1e-5)  # the same float32 joiner, normalised by logsumexp
    _check(opaque, model, ScoreOptions(elements=1, rows=3), atol=1e-5)


@pytest.mark.parametrize("options", [ScoreOptions(), ScoreOptions(elements=7, rows=2)])
def test_stateless_teacher_with_shared_rows_matches_reference(options) -> None:
    model = _stateless()
    _check(model, model, options, atol=1e-5)


def test_a_joiner_that_only_looks_like_tanh_is_not_taken_for_one() -> None:
    model = _lstm()
    layer = model.model.joiner_out
    model.model.join = lambda e, p: layer(torch.relu(e + p))  # type: ignore[method-assign]
    assert tanh_output_layer(model) is None


def test_only_empty_texts_and_repeated_pairs() -> None:
    model = _lstm()
    frames, _ = _utterances(model.model.encoder_dim)
    with torch.inference_mode():
        projected = [model.project_encoder(f) for f in frames[:2]]
        expected = [score_texts(model, frames[i], [[]])[0] for i in range(2)]
    got = score_pairs(model, projected, [(0, []), (1, []), (0, [])])
    assert np.allclose(got, [expected[0], expected[1], expected[0]], atol=1e-5)
    assert score_pairs(model, projected, []) == []
