"""What the pipeline needs from a teacher, whatever runs it (a leaf: no model code, no stage code).

A :class:`Teacher` turns cuts into n-best lists (with total log-probabilities),
encoder frames and a pooled embedding (the mean of the frames: a fixed-size
summary of how the utterance sounds, compared across cuts by ``choral graph``),
and gives the propagate stage a :class:`Scorer` of arbitrary texts.

A scorer is any callable ``scorer(cut_id, texts) -> log-likelihoods``. A
:class:`NamedScorer` also says what it is (``name``) and which files it is read
from (``inputs``), so the propagate and tune sidecars can tell when it changed;
an anonymous scorer may change between runs, so a stage given one never skips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from lhotse.cut import Cut


class Scorer(Protocol):
    """Log-likelihoods of ``texts`` as transcripts of the cut ``cut_id``, one per text."""

    def __call__(self, cut_id: str, texts: Sequence[str]) -> Sequence[float]: ...


class NamedScorer(Scorer, Protocol):
    """A reproducible scorer: ``name`` and the files in ``inputs`` key the meta sidecars of the stages using it."""

    name: str
    inputs: list[Path]


def is_reproducible(scorer: Scorer | None) -> bool:
    """Whether a stage may skip on a matching sidecar with this scorer: no scorer, or a named one.

    An anonymous scorer (any plain callable) may answer differently between runs, so a
    stage given one always runs.
    """
    return scorer is None or hasattr(scorer, "name")


@dataclass
class DecodeResult:
    """One decoded cut: n-best ``(text, tokens, score)`` best first, encoder frames ``(T', D)``, embedding ``(D,)``."""

    nbest: list[tuple[str, list[int], float]]
    frames: np.ndarray
    embedding: np.ndarray


class Teacher(Protocol):
    def decode(self, cuts: Sequence[Cut]) -> list[DecodeResult]:
        """Decode cuts together; raises AudioError naming every cut whose audio is unusable."""

    def scorer(self, cuts: Sequence[Cut]) -> Scorer:
        """A scorer of texts for these cuts (looked up by cut id); choral's backends also take
        ``options`` (a :class:`~.scoring.ScoreOptions`) and ``store`` (a persistent memo)."""


class AudioError(Exception):
    """Audio of some cuts could not be used; ``failures`` maps cut id -> reason."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = dict(failures)
        super().__init__("; ".join(f"cut {k}: {v}" for k, v in self.failures.items()))
