"""Text scorers of the teacher layer: the batched scorer every backend hands out, and the named teacher scorer.

Scoring a borrowed transcript ``y`` of a cut is its RNN-T log-likelihood
``log P(y | x)`` (all alignments) given the cut's encoder frames. :class:`BatchScorer`
scores many ``(cut, text)`` pairs together: ``prefetch`` takes every pair a
propagation batch will ask for, encodes (or loads the stored frames of) the cuts
involved, sorts the pairs by lattice size and scores them in padded lattice passes
(:func:`score_pairs`), so the joiner runs on large tensors and the forward
algorithm's frame loop is paid once per pass, not once per cut. Scores are
memoised per (cut, text) (tuning asks for the same ones under every parameter
combination), and optionally in a :class:`~.score_memo.ScoreMemo` on disk that
``choral tune`` and ``choral propagate`` share across processes.

Options (:class:`ScoreOptions`): the lattice's floating type (float32 by default:
``benchmarks/score_speed.py`` measures its difference from float64 on the accented
pool), and an optional pruned lattice (``prune``: labels kept per frame around the
best path, :func:`~choral.kernels.rnnt.rnnt_pruned_log_likelihood`).

:class:`TeacherScorer` is what ``propagate`` and ``tune`` get for ``--teacher``:
its ``name`` and ``inputs`` are known at once, the teacher is opened on the first
call, so a stage found up to date loads no model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Protocol, Sequence

import numpy as np
import torch
from lhotse.cut import Cut

from ...kernels.rnnt import rnnt_log_likelihood_from_arcs, rnnt_pruned_log_likelihood
from ..errors import ChoralError
from .contracts import AudioError, Scorer
from .tokens import BLANK, TokenTable

log = logging.getLogger(__name__)

Request = tuple[str, Sequence[str]]  # (cut id, texts)


class LatticeModel(Protocol):
    """What lattice scoring needs of a transducer (a subset of :class:`~.search.Decodable`)."""

    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor: ...

    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor: ...

    def predict_along(self, targets: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ScoreOptions:
    """How lattices are scored: floating type of the forward algorithm, pruning, and pass size.

    ``prune`` = 0 scores the full lattice; ``prune`` = S keeps S labels per frame around
    the best path (faster, a lower bound of the full likelihood). ``elements`` bounds
    ``pairs x frames x (labels + 1) x joiner_dim`` of one full-lattice pass (the joiner's
    hidden activations, 4 bytes each).
    """

    dtype: Literal["float32", "float64"] = "float32"
    prune: int = 0
    elements: int = 1 << 25

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"lattice dtype must be float32 or float64, not {self.dtype!r}")
        if self.prune < 0 or 0 < self.prune < 3:
            raise ValueError("prune must be 0 (full lattice) or at least 3 labels per frame")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    @property
    def tag(self) -> str:
        """What distinguishes these scores from others of the same teacher (scorer names, memo keys)."""
        return self.dtype + (f",prune{self.prune}" if self.prune else "")


def _padded(rows: Sequence[torch.Tensor], length: int, fill: float = 0.0) -> torch.Tensor:
    out = rows[0].new_full((len(rows), length, *rows[0].shape[1:]), fill)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


@torch.inference_mode()
def score_pairs(model: LatticeModel, projected: Sequence[torch.Tensor], pairs: Sequence[tuple[int, Sequence[int]]],
                options: ScoreOptions = ScoreOptions()) -> list[float]:
    """``log P(y | x)`` of each pair ``(utterance index, token ids)``, ``projected[i]`` being utterance ``i``'s
    encoder frames after ``model.project_encoder`` ``(T_i, J)``.

    Pairs are sorted by ``(T, U)`` and cut into passes of similar size; a pass pads its
    frames and targets, runs the predictor over all its targets at once, and either
    evaluates the joiner on the whole ``(pairs, T, U+1)`` lattice (chunked over frames)
    and runs :func:`~choral.kernels.rnnt.rnnt_log_likelihood_from_arcs`, or, pruned, on
    ``prune`` nodes per frame inside :func:`~choral.kernels.rnnt.rnnt_pruned_log_likelihood`.
    """
    if not pairs:
        return []
    device = projected[0].device
    dtype = options.torch_dtype
    joiner_dim = projected[0].shape[-1]
    order = sorted(range(len(pairs)), key=lambda i: (projected[pairs[i][0]].shape[0], len(pairs[i][1])))
    out = [0.0] * len(pairs)
    begin = 0
    while begin < len(order):
        # grow the pass while its padded lattice fits the budget (frames only grow along `order`)
        end, labels = begin + 1, len(pairs[order[begin]][1])
        while end < len(order):
            index, tokens = pairs[order[end]]
            labels = max(labels, len(tokens))
            width = min(options.prune, labels + 1) if options.prune else labels + 1
            if (end + 1 - begin) * projected[index].shape[0] * width * joiner_dim > options.elements:
                break
            end += 1
        chunk = order[begin:end]
        scores = _score_pass(model, [projected[pairs[i][0]] for i in chunk], [pairs[i][1] for i in chunk],
                             options, dtype, device)
        for i, score in zip(chunk, scores):
            out[i] = score
        begin = end
    return out


def _score_pass(model: LatticeModel, frames: list[torch.Tensor], token_lists: list[Sequence[int]],
                options: ScoreOptions, dtype: torch.dtype, device: torch.device) -> list[float]:
    """One padded lattice pass over pairs of similar size."""
    n = len(frames)
    frame_lengths = torch.tensor([f.shape[0] for f in frames], device=device)
    target_lengths = torch.tensor([len(t) for t in token_lists], device=device)
    longest = int(target_lengths.max())
    targets = torch.full((n, longest), BLANK, dtype=torch.long)
    for i, tokens in enumerate(token_lists):
        if tokens:
            targets[i, : len(tokens)] = torch.as_tensor(list(tokens), dtype=torch.long)
    targets = targets.to(device)
    enc_p = _padded(frames, int(frame_lengths.max()))  # (n, T, J)
    pred_p = model.predict_along(targets).to(device)  # (n, U+1, J)
    if options.prune and options.prune <= longest:
        return _pruned_pass(model, enc_p, pred_p, targets, frame_lengths, target_lengths, options, dtype).tolist()
    blank_rows, label_rows = [], []
    step = max(1, options.elements // max(n * (longest + 1) * enc_p.shape[-1], 1))
    label_index = targets[:, None, :, None]
    for t0 in range(0, enc_p.shape[1], step):
        log_probs = model.join(enc_p[:, t0: t0 + step, None, :], pred_p[:, None, :, :]).log_softmax(-1)
        blank_rows.append(log_probs[..., BLANK])
        label_rows.append(torch.gather(log_probs[:, :, :longest, :], 3,
                                       label_index.expand(n, log_probs.shape[1], longest, 1)).squeeze(3))
    blank_lp = torch.cat(blank_rows, dim=1).to(dtype)
    label_lp = torch.cat(label_rows, dim=1).to(dtype)
    return rnnt_log_likelihood_from_arcs(blank_lp, label_lp, frame_lengths, target_lengths).tolist()


def _pruned_pass(model: LatticeModel, enc_p: torch.Tensor, pred_p: torch.Tensor, targets: torch.Tensor,
                 frame_lengths: torch.Tensor, target_lengths: torch.Tensor, options: ScoreOptions,
                 dtype: torch.dtype) -> torch.Tensor:
    width = options.prune
    longest = targets.shape[1]
    offsets = torch.arange(width, device=enc_p.device)
    joiner_dim = pred_p.shape[-1]

    def arcs_at(t: int, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nodes = (starts[:, None] + offsets[None, :]).clamp(max=longest)  # (n, width)
        window = torch.gather(pred_p, 1, nodes[:, :, None].expand(-1, -1, joiner_dim))
        log_probs = model.join(enc_p[:, t, None, :], window).log_softmax(-1)  # (n, width, V)
        symbols = torch.gather(targets, 1, nodes.clamp(max=longest - 1))
        return log_probs[..., BLANK], torch.gather(log_probs, 2, symbols[:, :, None]).squeeze(2)

    return rnnt_pruned_log_likelihood(arcs_at, frame_lengths, target_lengths, width, dtype=dtype)


class ScoreStore(Protocol):
    """A persistent memo of scores (see :class:`~.score_memo.ScoreMemo`)."""

    def get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]: ...

    def put_many(self, items: dict[tuple[str, str], float]) -> None: ...


class BatchScorer:
    """A :class:`~.contracts.Scorer` over ``cuts`` that scores requests in batches (see the module docstring).

    ``encode(cuts)`` gives each cut's encoder frames ``(T_i, D)`` (before
    ``model.project_encoder``), raising :class:`~.contracts.AudioError` for cuts whose
    audio is unusable; ``tokens`` turns texts into the model's symbol ids.
    """

    def __init__(self, cuts: Iterable[Cut], model: LatticeModel, encode: Callable[[list[Cut]], list[torch.Tensor]],
                 tokens: TokenTable, options: ScoreOptions = ScoreOptions(), *, batch_cuts: int = 256,
                 store: ScoreStore | None = None) -> None:
        self.by_id = {cut.id: cut for cut in cuts}
        self.model = model
        self.encode = encode
        self.tokens = tokens
        self.options = options
        self.batch_cuts = batch_cuts
        self.store = store
        self.memo: dict[tuple[str, str], float] = {}
        self.pairs_scored = 0

    def __call__(self, cut_id: str, texts: Sequence[str]) -> Sequence[float]:
        self.prefetch([(cut_id, texts)])
        return [self.memo[(cut_id, t)] for t in texts]

    def score_many(self, requests: Sequence[Request]) -> list[list[float]]:
        """The scores of every request, in order."""
        self.prefetch(requests)
        return [[self.memo[(cut_id, t)] for t in texts] for cut_id, texts in requests]

    def prefetch(self, requests: Sequence[Request]) -> None:
        """Score every (cut, text) pair of ``requests`` not memoised yet, ``batch_cuts`` cuts per pass."""
        missing: dict[str, list[str]] = {}
        for cut_id, texts in requests:
            for text in texts:
                if (cut_id, text) not in self.memo:
                    missing.setdefault(cut_id, [])
                    if text not in missing[cut_id]:
                        missing[cut_id].append(text)
        if not missing:
            return
        unknown = next((c for c in missing if c not in self.by_id), None)
        if unknown is not None:
            raise KeyError(f"scorer has no cut {unknown!r}")
        if self.store is not None:
            found = self.store.get_many([(c, t) for c, texts in missing.items() for t in texts])
            self.memo.update(found)
            missing = {c: [t for t in texts if (c, t) not in found] for c, texts in missing.items()}
            missing = {c: texts for c, texts in missing.items() if texts}
        cut_ids = list(missing)
        for begin in range(0, len(cut_ids), self.batch_cuts):
            group = cut_ids[begin: begin + self.batch_cuts]
            scored = self._score_cuts({c: missing[c] for c in group})
            self.memo.update(scored)
            if self.store is not None:
                self.store.put_many(scored)

    def _score_cuts(self, texts_of: dict[str, list[str]]) -> dict[tuple[str, str], float]:
        cuts = [self.by_id[c] for c in texts_of]
        try:
            encoded = self.encode(cuts)
        except AudioError as error:  # the audio went away after decode, and no frames were stored
            cut_id, reason = next(iter(error.failures.items()), (cuts[0].id, str(error)))
            raise ChoralError(f"cut {cut_id}: the teacher scorer needs its audio ({reason}); restore the audio, "
                              "decode with --save-frames (scores then come from the stored frames) or set "
                              "propagate.scorer: false") from None
        with torch.inference_mode():
            projected = [self.model.project_encoder(frames) for frames in encoded]
        keys = [(c, t) for c, texts in texts_of.items() for t in texts]
        index = {c: i for i, c in enumerate(texts_of)}
        values = score_pairs(self.model, projected, [(index[c], self.tokens.encode(t)) for c, t in keys],
                             self.options)
        self.pairs_scored += len(keys)
        return {key: float(v) for key, v in zip(keys, values)}


def stored_or_encoded(cuts: Sequence[Cut], stored: Callable[[Cut], torch.Tensor | None],
                      features: Callable[[list[Cut]], list[np.ndarray]],
                      encode_features: Callable[[list[np.ndarray]], tuple[torch.Tensor, torch.Tensor]],
                      seconds: float = 60.0) -> list[torch.Tensor]:
    """Each cut's encoder frames: ``stored(cut)`` (the frames decode kept) when it has them, else its audio's
    features encoded in batches of at most ``seconds`` of audio (an AudioError names the failed cuts)."""
    out: list[torch.Tensor | None] = [stored(cut) for cut in cuts]
    need = [i for i, frames in enumerate(out) if frames is None]
    batch: list[int] = []
    total = 0.0
    for position, i in enumerate(need):
        batch.append(i)
        total += cuts[i].duration
        if position + 1 == len(need) or total + cuts[need[position + 1]].duration > seconds:
            encoded, lengths = encode_features(features([cuts[k] for k in batch]))
            for row, k in enumerate(batch):
                out[k] = encoded[row, : int(lengths[row])]
            batch, total = [], 0.0
    return [frames for frames in out if frames is not None]


def prefetch(scorer: Scorer | None, requests: Sequence[Request]) -> None:
    """Let ``scorer`` score ``requests`` in one batch if it can (a plain callable is asked one cut at a time later)."""
    method = getattr(scorer, "prefetch", None)
    if method is not None and requests:
        method(requests)


class TeacherScorer:
    """A :class:`~.contracts.NamedScorer` whose scorer is built by ``build()`` on the first call."""

    def __init__(self, name: str, inputs: Sequence[Path], build: Callable[[], Scorer]) -> None:
        self.name = name
        self.inputs = list(inputs)
        self._build = build
        self._scorer: Scorer | None = None

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the built scorer (a model and an open memo): a worker builds its own on first use."""
        return {**self.__dict__, "_scorer": None}

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self._build()
        return self._scorer

    def __call__(self, cut_id: str, texts: Sequence[str]) -> Sequence[float]:
        return self.scorer(cut_id, texts)

    def prefetch(self, requests: Sequence[Request]) -> None:
        prefetch(self.scorer, requests)
