"""The per-cut fields choral reads and writes (the contract in DESIGN.md), validated.

- ``custom["nbest"]``: ``[{"text", "tokens", "score"}]``, best first (teacher log-probabilities);
- ``custom["embedding"]``: lhotse ``Array``, the pooled utterance vector;
- ``custom["frames"]``: optional lhotse ``TemporalArray`` of encoder frames;
- ``custom["group"]``: group id assigned by ``choral group``;
- a cut is *annotated* when one of its supervisions carries reference text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse.cut import Cut

from .errors import InputError


@dataclass(frozen=True)
class Hypothesis:
    """One n-best entry: the text and its teacher log-probability."""

    text: str
    score: float
    tokens: tuple[int, ...] = ()


def custom_field(cut: Cut, name: str):
    """``cut.custom[name]`` or None (cuts without ``custom`` are fine)."""
    custom = getattr(cut, "custom", None) or {}
    return custom.get(name)


def nbest(cut: Cut, source: str | Path) -> list[Hypothesis]:
    """The cut's n-best list, validated; an InputError names the file and cut otherwise."""
    raw = custom_field(cut, "nbest")
    if raw is None:
        raise InputError(source, "cut has no n-best hypotheses (custom.nbest); run `choral decode` first", cut_id=cut.id)
    if not isinstance(raw, list) or not raw:
        raise InputError(source, "custom.nbest must be a non-empty list", cut_id=cut.id)
    hypotheses = []
    for rank, entry in enumerate(raw):
        if not isinstance(entry, dict) or "text" not in entry or "score" not in entry:
            raise InputError(source, f"custom.nbest[{rank}] needs 'text' and 'score'", cut_id=cut.id)
        score = entry["score"]
        if not isinstance(score, (int, float)) or math.isnan(score):
            raise InputError(source, f"custom.nbest[{rank}].score is not a number", cut_id=cut.id)
        text = entry["text"] if entry["text"] is not None else ""
        hypotheses.append(Hypothesis(text=str(text), score=float(score), tokens=tuple(entry.get("tokens") or ())))
    return hypotheses


def reference_text(cut: Cut) -> str | None:
    """The cut's reference transcript if it is annotated, else None."""
    texts = [s.text for s in cut.supervisions if s.text is not None and s.text.strip()]
    return " ".join(texts) if texts else None


def is_annotated(cut: Cut) -> bool:
    """Annotated cuts carry reference text; they seed propagation and teach the threshold."""
    return reference_text(cut) is not None


def load_array(cut: Cut, name: str, source: str | Path) -> np.ndarray:
    """Load ``custom[name]`` (an lhotse Array) as float32, rejecting missing or non-finite data."""
    if custom_field(cut, name) is None:
        raise InputError(source, f"cut has no custom.{name}", cut_id=cut.id)
    try:
        array = np.asarray(cut.load_custom(name), dtype=np.float32)
    except Exception as error:  # noqa: BLE001 - storage backends raise many kinds
        raise InputError(source, f"cannot load custom.{name} ({error})", cut_id=cut.id) from None
    if array.size == 0:
        raise InputError(source, f"custom.{name} is empty", cut_id=cut.id)
    if not np.all(np.isfinite(array)):
        raise InputError(source, f"custom.{name} holds NaN or infinite values", cut_id=cut.id)
    return array


def choral_entry(cut: Cut, source: str | Path) -> dict:
    """The raw ``custom.choral`` dict written by ``choral propagate`` (stored as a one-element list
    so lhotse leaves it alone); an InputError names the file and cut when it is missing or malformed."""
    raw = custom_field(cut, "choral")
    if raw is None:
        raise InputError(source, "cut has no pseudo-label (custom.choral); run `choral propagate` first",
                         cut_id=cut.id)
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    if not isinstance(raw, dict) or "text" not in raw:
        raise InputError(source, "custom.choral must be a list of one {text, confidence, teacher_text, source}",
                         cut_id=cut.id)
    return raw
