"""The label each cut is exported with, read from ``custom.choral``, and the filters that drop cuts.

Annotated cuts are exported with their reference text and are never dropped;
every other cut carries the rescored pseudo-label ``choral propagate`` wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from lhotse.cut import Cut

from ..errors import InputError
from ..fields import SOURCES, choral_entry, cut_id_of, reference_text

# Drop reasons, as the summary names them.
EMPTY = "empty pseudo-label"
LOW_CONFIDENCE = "confidence < --min-confidence"
HIGH_WER = "WER estimate > --max-wer-estimate"


@dataclass(frozen=True)
class Label:
    """The transcript a cut is exported with, and where it came from."""

    text: str
    confidence: float
    teacher_text: str
    source: str

    def provenance(self) -> dict[str, object]:
        return {"teacher_text": self.teacher_text, "confidence": self.confidence, "source": self.source}


def _confidence(entry: dict, cut: Cut | Mapping, source: Path) -> float:
    """The label's confidence, a probability; round-off just outside [0, 1] is clipped."""
    value = entry.get("confidence")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e-6 <= value <= 1.0 + 1e-6:
        raise InputError(source, f"custom.choral confidence must be a number in [0, 1], found {value!r}",
                         cut_id=cut_id_of(cut))
    return min(max(float(value), 0.0), 1.0)


def _text(entry: dict, key: str, cut: Cut | Mapping, source: Path) -> str:
    """A text field of the label with whitespace collapsed (one line, single spaces); None reads as empty."""
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(source, f"custom.choral {key} must be a string", cut_id=cut_id_of(cut))
    return " ".join((value or "").split())


def pseudo_label(cut: Cut | Mapping, source: Path) -> Label:
    """The export label of a cut (or a raw JSON cut dict), validated; annotated cuts are exported with their
    reference text."""
    entry = choral_entry(cut, source)
    confidence = _confidence(entry, cut, source)
    origin = entry.get("source")
    if origin not in SOURCES:
        raise InputError(source, f"custom.choral source must be one of {', '.join(SOURCES)}, found {origin!r}",
                         cut_id=cut_id_of(cut))
    teacher_text = _text(entry, "teacher_text", cut, source)
    reference = reference_text(cut)
    if reference is not None:
        return Label(" ".join(reference.split()), confidence, teacher_text, "reference")
    if origin == "reference":
        raise InputError(source, "custom.choral source is 'reference' but the cut has no reference text",
                         cut_id=cut_id_of(cut))
    return Label(_text(entry, "text", cut, source), confidence, teacher_text, origin)


def drop_reason(label: Label, *, min_confidence: float | None = None,
                max_wer_estimate: float | None = None) -> str | None:
    """Why a cut is left out of the training set, or None to keep it; references are always kept."""
    if label.source == "reference":
        return None
    if not label.text:
        return EMPTY
    if min_confidence is not None and label.confidence < min_confidence:
        return LOW_CONFIDENCE
    # WER estimate = 1 - confidence; the epsilon keeps 1 - 0.7 from counting as above 0.3.
    if max_wer_estimate is not None and 1.0 - label.confidence > max_wer_estimate + 1e-9:
        return HIGH_WER
    return None
