"""The torch checkpoint backend: choral's character :class:`~.model.Transducer` with modified beam search.

A checkpoint is one file (weights, config, token table, choral version) written
by :func:`save_teacher`. Registered as the ``checkpoint`` teacher backend:
``--teacher`` names a checkpoint by its path, or ``default`` for the one shipped
with choral.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lhotse.cut import Cut

from ..errors import ChoralError
from .contracts import DecodeResult
from .features import batch_features
from .model import Transducer, TransducerConfig, load_checkpoint, save_checkpoint
from .precision import HalfPrecision
from .registry import register_teacher_backend
from .scoring import BatchScorer, ScoreOptions, ScoreStore, stored_or_encoded
from .search import Hypothesis, TorchDecodable, greedy_search, modified_beam_search, nbest_texts, score_texts
from .tokens import TokenTable


class TransducerTeacher(HalfPrecision[Transducer]):
    """A :class:`~.contracts.Teacher` backed by the character :class:`~.model.Transducer` and modified beam search."""

    def __init__(self, model: Transducer, tokens: TokenTable = TokenTable(), *, beam: int = 8, nbest: int = 8,
                 search_temperature: float = 1.0) -> None:
        if model.config.vocab_size != len(tokens):
            raise ValueError(f"model vocabulary {model.config.vocab_size} != token table size {len(tokens)}")
        if beam < 1 or nbest < 1:
            raise ValueError("beam and nbest must be at least 1")
        if search_temperature <= 0:
            raise ValueError("search temperature must be positive")
        self.search_temperature = search_temperature
        self.model = model.eval()
        self.tokens = tokens
        self.beam = beam
        self.nbest = nbest

    @classmethod
    def random(cls, config: TransducerConfig = TransducerConfig(), seed: int = 0, **options) -> "TransducerTeacher":
        """An untrained teacher with reproducible random weights (tests and benchmarks)."""
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = Transducer(config)
        finally:
            torch.random.set_rng_state(generator_state)
        return cls(model, TokenTable(), **options)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> "TransducerTeacher":
        """Move the model to ``device`` (decode and scoring then run there)."""
        self.model.to(device)
        self._move_copies(device)
        return self

    # --- encoding ------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_features(self, features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad ``(T_i, mel)`` feature matrices into a batch and run the encoder."""
        lengths = torch.tensor([f.shape[0] for f in features])
        batch = torch.zeros(len(features), int(lengths.max()), features[0].shape[1])
        for i, f in enumerate(features):
            batch[i, : f.shape[0]] = torch.from_numpy(f)
        return self.model.encode(batch.to(self.device, self.dtype), lengths.to(self.device))

    # --- Teacher protocol ----------------------------------------------------------------
    def decode(self, cuts: Sequence[Cut]) -> list[DecodeResult]:
        return self.decode_features(batch_features(cuts, self.model.config.num_mel_bins))

    def decode_features(self, features: Sequence[np.ndarray]) -> list[DecodeResult]:
        """Beam-search a batch of feature matrices together."""
        if not features:
            return []
        encoded, lengths = self.encode_features(features)
        nbests = modified_beam_search(self.model, encoded, lengths, self.beam, self.search_temperature)
        results = []
        for i, hyps in enumerate(nbests):
            utterance = encoded[i, : int(lengths[i])]
            # exact RNN-T log-likelihoods (all alignments), comparable with the scorer's
            exact = score_texts(self.model, utterance, [h.tokens for h in hyps])
            hyps = [Hypothesis(h.tokens, score) for h, score in zip(hyps, exact)]
            frames = utterance.float().cpu().numpy()
            results.append(DecodeResult(nbest_texts(hyps, self.tokens, self.nbest), frames, frames.mean(axis=0)))
        return results

    def greedy(self, cuts: Sequence[Cut]) -> list[tuple[str, list[int], float]]:
        """Greedy 1-best ``(text, tokens, path score)`` per cut."""
        encoded, lengths = self.encode_features(batch_features(cuts, self.model.config.num_mel_bins))
        return [(self.tokens.decode(h.tokens), list(h.tokens), h.score)
                for h in greedy_search(self.model, encoded, lengths)]

    def feature_options(self) -> tuple[int, bool]:
        """``(num_mel_bins, normalize)`` of :func:`~.features.cut_features` for this model (decode's loaders)."""
        return self.model.config.num_mel_bins, True

    def features(self, cuts: Sequence[Cut]) -> list[np.ndarray]:
        """The encoder's input features of ``cuts`` (one AudioError naming every failed cut)."""
        return batch_features(cuts, self.model.config.num_mel_bins)

    def scorer(self, cuts: Sequence[Cut], options: ScoreOptions = ScoreOptions(), *,
               store: ScoreStore | None = None) -> BatchScorer:
        """Scores texts by RNN-T log-likelihood, many (cut, text) pairs per lattice pass (:mod:`.scoring`).

        Encoder outputs come from the cut's stored ``custom.frames`` when decode kept them
        (the same encoder output, without reading audio again), else from the audio.
        """
        def stored_frames(cut: Cut) -> torch.Tensor | None:
            if not cut.custom or cut.custom.get("frames") is None:
                return None
            frames = np.asarray(cut.load_custom("frames"), dtype=np.float32)
            if frames.ndim != 2 or frames.shape[1] != self.model.encoder_dim or not np.all(np.isfinite(frames)):
                return None
            return torch.from_numpy(frames).to(self.device, self.dtype)

        def encode(batch: list[Cut]) -> list[torch.Tensor]:
            return stored_or_encoded(batch, stored_frames, self.features, self.encode_features)

        return BatchScorer(cuts, TorchDecodable(self.model), encode, self.tokens, options, store=store)


def save_teacher(teacher: TransducerTeacher, path: str | Path) -> None:
    """Write the teacher's checkpoint (weights, config, token table, choral version) to one file."""
    save_checkpoint(teacher.model, teacher.tokens, path)


def load_teacher(path: str | Path, *, beam: int = 8, nbest: int = 8, search_temperature: float = 1.0
                 ) -> TransducerTeacher:
    """Load a checkpoint written by :func:`save_teacher` (ChoralError if it is not one)."""
    model, tokens = load_checkpoint(path)
    try:
        return TransducerTeacher(model, tokens, beam=beam, nbest=nbest, search_temperature=search_temperature)
    except ValueError as error:
        raise ChoralError(f"{path}: {error}") from None


@register_teacher_backend
class CheckpointBackend:
    """A checkpoint file written by :func:`save_teacher`, opened with torch."""

    name = "checkpoint"
    kind = "a teacher checkpoint"
    description = "a checkpoint file written by save_teacher"

    def claims(self, path: Path) -> bool:
        return path.is_file()

    def files(self, path: Path) -> list[Path]:
        return [path]

    def open(self, path: Path, *, beam: int, nbest: int, search_temperature: float) -> TransducerTeacher:
        return load_teacher(path, beam=beam, nbest=nbest, search_temperature=search_temperature)
