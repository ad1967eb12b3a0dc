"""The ``stateless`` teacher backend: a checkpoint of :class:`~.stateless.StatelessTransducer` run in torch.

It decodes and scores as its ONNX export does under the ``icefall`` backend
(:mod:`.icefall_backend`), so a teacher can be used before and after
``choral export-teacher`` with the same results: raw log-mel fbank in (the model
normalises), batched modified beam search, n-best rescored exactly, texts
segmented by the checkpoint's own sentencepiece model, and the frames stored and
pooled into the embedding are the *projected* encoder frames (``encoder_out``,
all that icefall's encoder export gives).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lhotse.cut import Cut

from ..errors import ChoralError

# torch_backend's checkpoint backend claims every file: imported (registered) before this module's backend, it
# is offered after it, so stateless checkpoints come here and character ones go on to it
from . import torch_backend  # noqa: F401
from .bpe import SentencePieceTable
from .contracts import DecodeResult
from .features import batch_features
from .precision import HalfPrecision
from .registry import register_teacher_backend
from .scoring import BatchScorer, ScoreOptions, ScoreStore, stored_or_encoded
from .search import Hypothesis, greedy_search, modified_beam_search, nbest_texts, score_texts
from .stateless import STATELESS_FORMAT, StatelessDecodable, StatelessTransducer, load_stateless

_PADDING = math.log(1e-10)  # what sherpa-onnx pads fbank batches with (the model masks it anyway)


class _ProjectedDecodable(StatelessDecodable):
    """The model seen from already projected encoder frames (what the teacher stores and scores from)."""

    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor:
        return encoded


class StatelessTeacher(HalfPrecision[StatelessTransducer]):
    """A :class:`~.contracts.Teacher` over a :class:`StatelessTransducer` and its sentencepiece vocabulary."""

    def __init__(self, model: StatelessTransducer, tokens: SentencePieceTable, *, beam: int = 8, nbest: int = 8,
                 search_temperature: float = 1.0) -> None:
        if model.config.vocab_size != len(tokens):
            raise ValueError(f"model vocabulary {model.config.vocab_size} != {len(tokens)} sentencepiece pieces")
        if beam < 1 or nbest < 1:
            raise ValueError("beam and nbest must be at least 1")
        if search_temperature <= 0:
            raise ValueError("search temperature must be positive")
        self.model = model.eval()
        self.tokens = tokens
        self.beam = beam
        self.nbest = nbest
        self.search_temperature = search_temperature
        self.decodable = _ProjectedDecodable(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> "StatelessTeacher":
        """Move the model to ``device`` (decode and scoring then run there)."""
        self.model.to(device)
        self._move_copies(device)
        return self

    def _precision_changed(self) -> None:
        self.decodable = _ProjectedDecodable(self.model)

    def feature_options(self) -> tuple[int, bool]:
        """``(num_mel_bins, normalize)`` of :func:`~.features.cut_features` for this model (decode's loaders)."""
        return self.model.config.num_mel_bins, False

    def features(self, cuts: Sequence[Cut]) -> list[np.ndarray]:
        """Raw log-mel fbank of ``cuts`` (one AudioError naming every failed cut)."""
        return batch_features(cuts, self.model.config.num_mel_bins, normalize=False)

    @torch.inference_mode()
    def encode_features(self, features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected encoder frames ``(N, T', J)`` and lengths of a padded batch of fbank matrices."""
        lengths = torch.tensor([f.shape[0] for f in features])
        batch = torch.full((len(features), int(lengths.max()), features[0].shape[1]), _PADDING)
        for i, f in enumerate(features):
            batch[i, : f.shape[0]] = torch.from_numpy(f)
        encoded, out_lengths = self.model.encode(batch.to(self.device, self.dtype), lengths.to(self.device))
        return self.model.encoder_proj(encoded), out_lengths

    def decode(self, cuts: Sequence[Cut]) -> list[DecodeResult]:
        return self.decode_features(self.features(cuts))

    @torch.inference_mode()
    def decode_features(self, features: Sequence[np.ndarray]) -> list[DecodeResult]:
        """Beam-search a batch together; n-best scores are exact RNN-T log-likelihoods."""
        if not features:
            return []
        projected, lengths = self.encode_features(features)
        results = []
        for i, hyps in enumerate(modified_beam_search(self.decodable, projected, lengths, self.beam,
                                                      self.search_temperature)):
            utterance = projected[i, : int(lengths[i])]
            exact = score_texts(self.decodable, utterance, [h.tokens for h in hyps])
            hyps = [Hypothesis(h.tokens, score) for h, score in zip(hyps, exact)]
            frames = utterance.float().cpu().numpy()
            results.append(DecodeResult(nbest_texts(hyps, self.tokens, self.nbest), frames, frames.mean(axis=0)))
        return results

    def greedy(self, cuts: Sequence[Cut]) -> list[tuple[str, list[int], float]]:
        """Greedy 1-best ``(text, tokens, path score)`` per cut."""
        projected, lengths = self.encode_features(self.features(cuts))
        return [(self.tokens.decode(h.tokens), list(h.tokens), h.score)
                for h in greedy_search(self.decodable, projected, lengths)]

    def scorer(self, cuts: Sequence[Cut], options: ScoreOptions = ScoreOptions(), *,
               store: ScoreStore | None = None) -> BatchScorer:
        """Scores texts by RNN-T log-likelihood of their sentencepiece segmentation, in batched lattice passes;
        frames from the cut's stored ``custom.frames`` when decode kept them (projected frames of this width),
        else from the audio."""
        width = self.model.config.joiner_dim

        def stored_frames(cut: Cut) -> torch.Tensor | None:
            if cut.custom and cut.custom.get("frames") is not None:
                frames = np.asarray(cut.load_custom("frames"), dtype=np.float32)
                if frames.ndim == 2 and frames.shape[1] == width and np.all(np.isfinite(frames)):
                    return torch.from_numpy(frames).to(self.device, self.dtype)
            return None

        def encode(batch: list[Cut]) -> list[torch.Tensor]:
            return stored_or_encoded(batch, stored_frames, self.features, self.encode_features)

        return BatchScorer(cuts, self.decodable, encode, self.tokens, options, store=store)


def load_stateless_teacher(path: str | Path, *, beam: int = 8, nbest: int = 8,
                           search_temperature: float = 1.0) -> StatelessTeacher:
    """The teacher of a checkpoint written by :func:`~.stateless.save_stateless`; ChoralError if it is not one."""
    model, tokens = load_stateless(path)
    try:
        return StatelessTeacher(model, tokens, beam=beam, nbest=nbest, search_temperature=search_temperature)
    except ValueError as error:
        raise ChoralError(f"{path}: {error}") from None


@lru_cache(maxsize=16)
def _declared_format(path: str, mtime_ns: int, size: int) -> Any:
    try:  # mmap: only the small header objects are read, not the weights
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch file (or not a zip-format one): not ours
        return None
    return payload.get("format") if isinstance(payload, dict) else None


def is_stateless_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint file declaring the stateless format."""
    if not path.is_file():
        return False
    stat = path.stat()
    return _declared_format(str(path), stat.st_mtime_ns, stat.st_size) == STATELESS_FORMAT


@register_teacher_backend
class StatelessCheckpointBackend:
    """A stateless-decoder checkpoint file written by ``save_stateless``, opened with torch."""

    name = "stateless"
    kind = "a stateless teacher checkpoint"
    description = "a stateless-decoder checkpoint file written by save_stateless (icefall conventions)"

    def claims(self, path: Path) -> bool:
        return is_stateless_checkpoint(path)

    def files(self, path: Path) -> list[Path]:
        return [path]

    def open(self, path: Path, *, beam: int, nbest: int, search_temperature: float) -> StatelessTeacher:
        return load_stateless_teacher(path, beam=beam, nbest=nbest, search_temperature=search_temperature)
