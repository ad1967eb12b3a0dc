"""Text scorers of the teacher layer: the cached scorer every backend hands out, and the named teacher scorer.

Scoring a borrowed transcript needs the cut's encoder output: it is computed (or
loaded) on first use and the most recent few are kept, since the scores of one
cut are asked for together. Scores are memoised per (cut, text): tuning asks for
the same ones under every parameter combination.

:class:`TeacherScorer` is what ``propagate`` and ``tune`` get for ``--teacher``:
its ``name`` and ``inputs`` are known at once, the teacher is opened on the first
call, so a stage found up to date loads no model.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import torch
from lhotse.cut import Cut

from ..errors import ChoralError
from .contracts import AudioError, Scorer
from .tokens import TokenTable


def cached_scorer(
    cuts: Sequence[Cut],
    encode: Callable[[Cut], torch.Tensor],
    score_tokens: Callable[[torch.Tensor, list[list[int]]], Sequence[float]],
    tokens: TokenTable,
    cache_size: int = 64,
) -> Scorer:
    """A scorer over ``cuts``: ``encode(cut)`` gives its encoder output, ``score_tokens`` the log-likelihoods."""
    by_id = {cut.id: cut for cut in cuts}
    cache: OrderedDict[str, torch.Tensor] = OrderedDict()
    memo: dict[tuple[str, str], float] = {}

    def encoded_of(cut_id: str) -> torch.Tensor:
        if cut_id in cache:
            cache.move_to_end(cut_id)
            return cache[cut_id]
        if cut_id not in by_id:
            raise KeyError(f"scorer has no cut {cut_id!r}")
        try:
            cache[cut_id] = encode(by_id[cut_id])
        except AudioError as error:  # the audio went away after decode, and no frames were stored
            reason = error.failures.get(cut_id) or str(error)
            raise ChoralError(f"cut {cut_id}: the teacher scorer needs its audio ({reason}); restore the audio, "
                              "decode with --save-frames (scores then come from the stored frames) or set "
                              "propagate.scorer: false") from None
        if len(cache) > cache_size:
            cache.popitem(last=False)
        return cache[cut_id]

    def score(cut_id: str, texts: Sequence[str]) -> Sequence[float]:
        missing = list(dict.fromkeys(t for t in texts if (cut_id, t) not in memo))
        if missing:
            values = score_tokens(encoded_of(cut_id), [tokens.encode(t) for t in missing])
            memo.update(((cut_id, t), float(v)) for t, v in zip(missing, values))
        return [memo[(cut_id, t)] for t in texts]

    return score


class TeacherScorer:
    """A :class:`~.contracts.NamedScorer` whose scorer is built by ``build()`` on the first call."""

    def __init__(self, name: str, inputs: Sequence[Path], build: Callable[[], Scorer]) -> None:
        self.name = name
        self.inputs = list(inputs)
        self._build = build
        self._scorer: Scorer | None = None

    def __call__(self, cut_id: str, texts: Sequence[str]) -> Sequence[float]:
        if self._scorer is None:
            self._scorer = self._build()
        return self._scorer(cut_id, texts)
