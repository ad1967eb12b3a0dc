"""The ``choral eval`` stage: score every rescored cut against its reference, write the report.

Three systems are scored per cut:

- ``teacher``: the teacher's 1-best (``nbest[0]``), what plain pseudo-labelling uses;
- ``choral``: the rescored label (``custom.choral[0].text``);
- ``oracle``: the n-best entry with the fewest word errors, the best any rescoring
  of the n-best could do.

Per cut it also records whether choral helped (fewer errors than the teacher) or harmed (more),
and its confidence (``custom.choral[0].confidence``) with whether the label is exactly right, for
the calibration table (:mod:`.calibration`). A confidence that is not a number in [0, 1] is an
InputError; a cut without one is counted and left out of the calibration.

WER is corpus-level (total word errors / total reference words, :mod:`..wer`) on text
passed through the same :class:`~..text.TextNormalizer` as every other stage. Cuts are
streamed; only the references (and the requested ``--by`` values) are held in memory.
:func:`evaluate_manifest` is the stage: skipped when ``report.json``'s sidecar says its
inputs and parameters are unchanged, redone with ``force``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ChoralError, InputError
from ..fields import UNKNOWN, choral_entry, choral_output, cut_id_of, field_values, is_annotated, nbest
from ..manifest import check_readable, iter_cut_dicts
from ..meta import StageRecord, is_up_to_date, write_meta
from ..progress import NullProgress, Progress
from ..references import Reference, read_references
from ..text import TextNormalizer
from ..wer import word_errors_many
from .report import ReportPaths, report_paths, write_report
from .tally import SPLITS, CutScore, EvalReport, SplitReport


@dataclass(frozen=True)
class EvalSummary:
    """What ``choral eval`` did: the report (``report.json``'s content) and where its files are."""

    paths: ReportPaths
    report: dict[str, Any]
    skipped: bool
    seconds: float = 0.0

    @property
    def n_missing_references(self) -> int:
        return sum(split["n_missing_references"] for split in self.report.values())


def score_cut(reference: str, teacher: str, choral: str, hypotheses: Sequence[str],
              normalizer: TextNormalizer, confidence: float | None = None) -> CutScore:
    """Score the teacher 1-best, the choral label and the n-best oracle against ``reference``;
    the choral label is *correct* when its normalised words equal the reference's."""
    ref = normalizer(reference)
    texts = [normalizer(text) for text in (teacher, choral, *hypotheses)]
    unique = list(dict.fromkeys(texts))
    errors = dict(zip(unique, word_errors_many(ref, unique)))
    oracle = min((errors[text] for text in texts[2:]), default=errors[texts[0]])
    return CutScore(n_words=len(ref.split()),
                    errors={"teacher": errors[texts[0]], "choral": errors[texts[1]], "oracle": oracle},
                    confidence=confidence, correct=texts[1].split() == ref.split())


def label_confidence(cut: Mapping, source: str | Path) -> float | None:
    """``custom.choral[0].confidence`` as a float in [0, 1], None when absent; an InputError otherwise."""
    value = choral_entry(cut, source).get("confidence")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
        raise InputError(source, f"custom.choral confidence must be a number in [0, 1], not {value!r}",
                         cut_id=cut_id_of(cut))
    return float(value)


def _by_values(cut: Mapping, reference: Reference, by: Sequence[str]) -> dict[str, str]:
    """Each ``--by`` value: the rescored cut's fields first, then the reference's, else ``unknown``."""
    found = field_values(cut, by)
    return {name: found.get(name, reference.fields.get(name, UNKNOWN)) for name in by}


def _check_by(by: Sequence[str]) -> tuple[str, ...]:
    """Field names, stripped and de-duplicated in order; an empty name is an error."""
    names = tuple(dict.fromkeys(name.strip() for name in by))
    if any(not name for name in names):
        raise ChoralError("--by needs a field name (e.g. --by accent)")
    return names


def evaluate(
    rescored: str | Path,
    references: str | Path,
    by: Sequence[str] = (),
    normalizer: TextNormalizer = TextNormalizer(),
    allow_missing: bool = False,
    *,
    progress: Progress = NullProgress(),
) -> EvalReport:
    """Score teacher, choral and oracle on every cut of ``rescored`` against ``references``.

    Unannotated cuts (the headline: labels choral had to infer) and annotated cuts are tallied
    apart, overall and per value of every ``by`` field. A rescored cut without a reference is an
    InputError naming the references file and the cut, unless ``allow_missing`` (then it is
    skipped and counted per split).
    """
    rescored, references = check_readable(rescored), check_readable(references)
    by = _check_by(by)
    progress.task("reading references", None)
    truth = read_references(references, by)
    report = EvalReport(rescored, references, by, normalizer, {name: SplitReport(by) for name in SPLITS})
    progress.task("scoring cuts", None)
    for cut in iter_cut_dicts(rescored):  # JSON objects: every field eval reads, without lhotse objects
        progress.advance()
        split = report.splits["annotated" if is_annotated(cut) else "unannotated"]
        hypotheses = [h.text for h in nbest(cut, rescored)]
        label, source = choral_output(cut, rescored)
        reference = truth.get(str(cut["id"]))
        if reference is None:
            if not allow_missing:
                raise InputError(references, f"no reference for this cut of {rescored} "
                                             "(--allow-missing skips and counts such cuts)", cut_id=str(cut["id"]))
            split.n_missing_references += 1
            continue
        score = score_cut(reference.text, hypotheses[0], label, hypotheses, normalizer,
                          label_confidence(cut, rescored))
        split.add(score, _by_values(cut, reference, by), source)
    return report


def evaluate_manifest(
    rescored: str | Path,
    references: str | Path,
    out_dir: str | Path,
    by: Sequence[str] = (),
    normalizer: TextNormalizer = TextNormalizer(),
    allow_missing: bool = False,
    *,
    force: bool = False,
    progress: Progress = NullProgress(),
) -> EvalSummary:
    """:func:`evaluate`, then :func:`~.report.write_report` into ``out_dir``; skipped when up to date."""
    rescored, references = check_readable(rescored), check_readable(references)
    by = _check_by(by)
    paths = report_paths(out_dir)
    record = StageRecord.create("eval", inputs=[rescored, references],
                                params={"by": list(by), "normalizer": asdict(normalizer),
                                        "allow_missing": allow_missing},
                                outputs=paths.all)
    if not force and is_up_to_date(record, paths.json):
        return EvalSummary(paths, json.loads(paths.json.read_text(encoding="utf-8")), skipped=True)
    started = time.perf_counter()
    report = evaluate(rescored, references, by, normalizer, allow_missing, progress=progress)
    write_report(report, out_dir)
    write_meta(record, paths.json)
    return EvalSummary(paths, report.to_dict(), skipped=False, seconds=time.perf_counter() - started)
