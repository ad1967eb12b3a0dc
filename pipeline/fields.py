"""The per-cut schema: the fields choral reads and writes on a lhotse cut, validated.

- ``custom["nbest"]``: ``[{"text", "tokens", "score"}]``, best first (teacher log-probabilities);
- ``custom["embedding"]``: lhotse ``Array``, the pooled utterance vector;
- ``custom["frames"]``: optional lhotse ``TemporalArray`` of encoder frames;
- ``custom["snr_db"]``: optional energy-percentile SNR of the audio in dB (:mod:`.noise`), written by decode;
- ``custom["group"]``: group id assigned by ``choral group``;
- ``custom["choral"]``: the pseudo-label written by ``choral propagate`` (:class:`CutResult`), stored
  as a one-element list so lhotse leaves it alone; its ``source`` is one of :data:`SOURCES`;
- a cut is *annotated* when one of its supervisions carries non-blank text (:func:`reference_text`,
  the one rule, for cut objects and raw JSON cut dicts alike);
- ``--by`` values of a cut (accent, speaker, ...): its custom, then its supervisions' speaker,
  language and gender, then their custom (:func:`field_values`).

Reference files (Kaldi ``text``, lhotse supervisions or cuts) are read by :mod:`.references`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from lhotse import SupervisionSegment
from lhotse.cut import Cut

from .errors import InputError

# Where a cut's pseudo-label came from: its own reference, the graph, or the teacher's 1-best.
SOURCES: tuple[str, ...] = ("reference", "propagated", "teacher")
SUPERVISION_ATTRIBUTES: tuple[str, ...] = ("speaker", "language", "gender")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Hypothesis:
    """One n-best entry: the text and its teacher log-probability."""

    text: str
    score: float
    tokens: tuple[int, ...] = ()


def custom_field(cut: Cut | Mapping, name: str):
    """``cut.custom[name]`` (of a cut object or a raw JSON cut dict) or None (cuts without ``custom`` are fine)."""
    custom = (cut.get("custom") if isinstance(cut, Mapping) else getattr(cut, "custom", None)) or {}
    return custom.get(name) if isinstance(custom, Mapping) else None


def cut_id_of(cut: Cut | Mapping) -> str:
    """The id of a cut object or of a raw JSON cut dict."""
    return str(cut["id"]) if isinstance(cut, Mapping) else cut.id


def nbest(cut: Cut | Mapping, source: str | Path) -> list[Hypothesis]:
    """The n-best list of a cut (or raw JSON cut dict), validated; an InputError names the file and cut otherwise."""
    raw = custom_field(cut, "nbest")
    if raw is None:
        raise InputError(source, "cut has no n-best hypotheses (custom.nbest); run `choral decode` first",
                         cut_id=cut_id_of(cut))
    if not isinstance(raw, list) or not raw:
        raise InputError(source, "custom.nbest must be a non-empty list", cut_id=cut_id_of(cut))
    hypotheses = []
    for rank, entry in enumerate(raw):
        if not isinstance(entry, dict) or "text" not in entry or "score" not in entry:
            raise InputError(source, f"custom.nbest[{rank}] needs 'text' and 'score'", cut_id=cut_id_of(cut))
        score = entry["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            # JSON's NaN and +-Infinity: no log-probability, and they break the posterior softmax
            raise InputError(source, f"custom.nbest[{rank}].score must be a finite log-probability, not {score!r}",
                             cut_id=cut_id_of(cut))
        text = entry["text"] if entry["text"] is not None else ""
        hypotheses.append(Hypothesis(text=str(text), score=float(score), tokens=tuple(entry.get("tokens") or ())))
    return hypotheses


def joined_text(texts: Iterable[object]) -> str | None:
    """The annotated rule: the non-blank texts joined by a space, or None when there is none."""
    kept = [text for text in texts if isinstance(text, str) and text.strip()]
    return " ".join(kept) if kept else None


def snr_db(cut: Cut | Mapping, source: str | Path) -> float | None:
    """The cut's ``custom.snr_db`` (dB) or None when decode did not measure it; anything but a finite number is an
    InputError naming the file and cut."""
    value = custom_field(cut, "snr_db")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(source, f"custom.snr_db must be a finite number of dB, not {value!r}", cut_id=cut_id_of(cut))
    return float(value)


def reference_text(cut: Cut | Mapping) -> str | None:
    """The reference transcript of a cut (or of a raw JSON cut dict) if it is annotated, else None."""
    if isinstance(cut, Mapping):
        return joined_text(s.get("text") for s in cut.get("supervisions") or [] if isinstance(s, Mapping))
    return joined_text(s.text for s in cut.supervisions)


def is_annotated(cut: Cut | Mapping) -> bool:
    """Annotated cuts carry reference text; they seed propagation and teach the threshold."""
    return reference_text(cut) is not None


def load_array(cut: Cut, name: str, source: str | Path) -> np.ndarray:
    """Load ``custom[name]`` (an lhotse Array) as float32, rejecting missing or non-finite data."""
    if custom_field(cut, name) is None:
        raise InputError(source, f"cut has no custom.{name}", cut_id=cut.id)
    try:
        array = np.asarray(cut.load_custom(name), dtype=np.float32)
    except Exception as error:  # storage backends raise many kinds
        raise InputError(source, f"cannot load custom.{name} ({error})", cut_id=cut.id) from None
    if array.size == 0:
        raise InputError(source, f"custom.{name} is empty", cut_id=cut.id)
    if not np.all(np.isfinite(array)):
        raise InputError(source, f"custom.{name} holds NaN or infinite values", cut_id=cut.id)
    return array


@dataclass(frozen=True)
class CutResult:
    """The pseudo-label of one cut (``custom.choral[0]``): its text, confidence, the teacher's 1-best and
    its source (one of :data:`SOURCES`)."""

    text: str
    confidence: float
    teacher_text: str
    source: str

    def to_custom(self) -> list[dict]:
        return [asdict(self)]


def choral_entry(cut: Cut | Mapping, source: str | Path) -> dict:
    """The raw ``custom.choral`` record written by ``choral propagate`` (of a cut or a raw JSON cut dict); an
    InputError names the file and cut when it is missing or malformed."""
    raw = custom_field(cut, "choral")
    if raw is None:
        raise InputError(source, "cut has no pseudo-label (custom.choral); run `choral propagate` first",
                         cut_id=cut_id_of(cut))
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    if not isinstance(raw, dict) or "text" not in raw:
        raise InputError(source, "custom.choral must be a list of one {text, confidence, teacher_text, source}",
                         cut_id=cut_id_of(cut))
    return raw


def choral_output(cut: Cut | Mapping, source: str | Path) -> tuple[str, str]:
    """The cut's pseudo-label text and where it came from (one of :data:`SOURCES`, ``unknown`` if unsaid)."""
    raw = choral_entry(cut, source)
    return str(raw["text"] or ""), str(raw.get("source") or UNKNOWN)


def _first_value(layers: Iterable[Mapping], name: str) -> object | None:
    """The first non-None ``name`` among ``layers`` (dicts searched in order)."""
    for layer in layers:
        value = layer.get(name)
        if value is not None:
            return value
    return None


def _pick(layers: Sequence[Mapping], names: Sequence[str]) -> dict[str, str]:
    """The values of ``names`` found in ``layers``, as strings (absent names are left out)."""
    values = {name: _first_value(layers, name) for name in names}
    return {name: str(value) for name, value in values.items() if value is not None}


def _attributes(supervision: SupervisionSegment) -> Mapping:
    return {name: getattr(supervision, name, None) for name in SUPERVISION_ATTRIBUTES}


def field_values(cut: Cut | Mapping, names: Sequence[str]) -> dict[str, str]:
    """The values of ``names`` of a cut (or raw JSON cut dict): its custom, then its supervisions' attributes,
    then their custom."""
    if isinstance(cut, Mapping):
        dicts = [s for s in cut.get("supervisions") or [] if isinstance(s, Mapping)]
        return _pick([custom_field_map(cut), *({n: s.get(n) for n in SUPERVISION_ATTRIBUTES} for s in dicts),
                      *(custom_field_map(s) for s in dicts)], names)
    supervisions = list(cut.supervisions)
    return _pick([getattr(cut, "custom", None) or {}, *map(_attributes, supervisions),
                  *(s.custom or {} for s in supervisions)], names)


def custom_field_map(item: Mapping) -> Mapping:
    """The ``custom`` dict of a raw JSON cut or supervision, or an empty one."""
    custom = item.get("custom")
    return custom if isinstance(custom, Mapping) else {}


def supervision_values(supervision: SupervisionSegment, names: Sequence[str]) -> dict[str, str]:
    """A supervision's values of ``names``: its custom, then its attributes (speaker, language, gender)."""
    return _pick([supervision.custom or {}, _attributes(supervision)], names)
