"""``choral eval``: word error rates of the teacher, of choral and of the n-best oracle.

Reads a rescored manifest (cuts with ``custom.nbest`` and ``custom.choral``) and
a separate file of true transcripts, and scores three systems per cut:

- ``teacher``: the teacher's 1-best (``nbest[0]``), what plain pseudo-labelling uses;
- ``choral``: the rescored label (``custom.choral[0].text``);
- ``oracle``: the n-best entry with the fewest word errors, the best any rescoring
  of the n-best could do.

WER is corpus-level (total word errors / total reference words) on text passed
through the same :class:`~.text.TextNormalizer` as every other stage, reported
separately for unannotated cuts (the headline: labels choral had to infer) and
annotated cuts, overall and per value of any ``--by`` field. Cuts are streamed;
only the references (and the requested ``--by`` values) are held in memory.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import jiwer
from lhotse import SupervisionSegment
from lhotse.cut import Cut
from lhotse.serialization import deserialize_item

from .errors import ChoralError, InputError
from .fields import choral_entry, is_annotated, nbest
from .manifest import atomic_output, check_readable, iter_cuts, iter_json_lines, write_json
from .progress import NullProgress, Progress
from .text import TextNormalizer

SYSTEMS: tuple[str, ...] = ("teacher", "choral", "oracle")
SPLITS: tuple[str, ...] = ("unannotated", "annotated")
SOURCES: tuple[str, ...] = ("reference", "propagated", "teacher")
SUPERVISION_ATTRIBUTES: tuple[str, ...] = ("speaker", "language", "gender")
UNKNOWN = "unknown"
MAX_CHART_GROUPS = 40


# ---------------------------------------------------------------------------
# word errors


def _chunk_errors(chunk: jiwer.AlignmentChunk) -> int:
    """Word errors in one alignment chunk: reference words substituted or deleted, hypothesis words inserted."""
    if chunk.type in ("substitute", "delete"):
        return chunk.ref_end_idx - chunk.ref_start_idx
    if chunk.type == "insert":
        return chunk.hyp_end_idx - chunk.hyp_start_idx
    return 0


def word_errors_many(reference: str, hypotheses: Sequence[str]) -> list[int]:
    """Word errors (S + D + I) of each normalised hypothesis against one normalised reference.

    One jiwer call per reference: jiwer's per-call overhead, not the alignment, dominates on short utterances.
    Empty strings are counted here, since older jiwer versions reject empty references.
    """
    n_reference = len(reference.split())
    errors = [len(h.split()) if not reference else n_reference if not h else -1 for h in hypotheses]
    pending = [i for i, e in enumerate(errors) if e < 0]
    if pending:
        output = jiwer.process_words([reference] * len(pending), [hypotheses[i] for i in pending])
        for i, alignment in zip(pending, output.alignments):
            errors[i] = sum(_chunk_errors(chunk) for chunk in alignment)
    return errors


def word_errors(reference: str, hypothesis: str) -> int:
    """Word errors (S + D + I) between two normalised strings."""
    return word_errors_many(reference, [hypothesis])[0]


@dataclass(frozen=True)
class CutScore:
    """Word errors of each system on one cut, and the cut's reference length."""

    n_words: int
    errors: Mapping[str, int]


def score_cut(reference: str, teacher: str, choral: str, hypotheses: Sequence[str],
              normalizer: TextNormalizer) -> CutScore:
    """Score the teacher 1-best, the choral label and the n-best oracle against ``reference``."""
    ref = normalizer(reference)
    texts = [normalizer(text) for text in (teacher, choral, *hypotheses)]
    unique = list(dict.fromkeys(texts))
    errors = dict(zip(unique, word_errors_many(ref, unique)))
    oracle = min((errors[text] for text in texts[2:]), default=errors[texts[0]])
    return CutScore(n_words=len(ref.split()),
                    errors={"teacher": errors[texts[0]], "choral": errors[texts[1]], "oracle": oracle})


# ---------------------------------------------------------------------------
# tallies


def relative_reduction(teacher_wer: float, choral_wer: float) -> float:
    """(teacher - choral) / teacher; 0 when the teacher makes no errors."""
    return (teacher_wer - choral_wer) / teacher_wer if teacher_wer > 0 else 0.0


@dataclass
class Tally:
    """Accumulated word errors per system over one slice of cuts."""

    n_cuts: int = 0
    n_words: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SYSTEMS, 0))

    def add(self, score: CutScore) -> None:
        self.n_cuts += 1
        self.n_words += score.n_words
        for system in SYSTEMS:
            self.errors[system] += score.errors[system]

    def wer(self, system: str) -> float:
        """Corpus-level WER; with no reference words, the raw error count (0 for an empty slice)."""
        return self.errors[system] / max(self.n_words, 1)

    @property
    def relative_wer_reduction(self) -> float:
        return relative_reduction(self.wer("teacher"), self.wer("choral"))


@dataclass
class SplitReport:
    """Tallies of one split (annotated or unannotated): overall, per ``--by`` value, choral sources."""

    by_fields: tuple[str, ...]
    overall: Tally = field(default_factory=Tally)
    by: dict[str, dict[str, Tally]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)
    n_missing_references: int = 0

    def __post_init__(self) -> None:
        for name in self.by_fields:
            self.by.setdefault(name, {})

    def add(self, score: CutScore, values: Mapping[str, str], source: str) -> None:
        self.overall.add(score)
        for name in self.by_fields:
            self.by[name].setdefault(values[name], Tally()).add(score)
        self.sources[source] += 1

    def groups(self, name: str) -> list[tuple[str, Tally]]:
        """The values of one ``--by`` field with their tallies, sorted by value."""
        return sorted(self.by[name].items())

    def to_dict(self) -> dict:
        """The split's part of ``report.json`` (required keys first, extras after)."""
        out: dict = {system: {"wer": self.overall.wer(system),
                              "by": {name: {value: tally.wer(system) for value, tally in self.groups(name)}
                                     for name in self.by_fields}}
                     for system in SYSTEMS}
        out["relative_wer_reduction"] = self.overall.relative_wer_reduction
        out["n_cuts"] = self.overall.n_cuts
        out["n_words"] = self.overall.n_words
        out["n_missing_references"] = self.n_missing_references
        out["sources"] = {**dict.fromkeys(SOURCES, 0), **dict(sorted(self.sources.items()))}
        out["breakdown"] = {name: {value: {"n_cuts": tally.n_cuts, "n_words": tally.n_words,
                                           "relative_wer_reduction": tally.relative_wer_reduction}
                                   for value, tally in self.groups(name)}
                            for name in self.by_fields}
        return out


@dataclass(frozen=True)
class ReportRow:
    """One table row: a slice of a split with its WERs (fractions) and counts."""

    label: str
    n_cuts: int
    n_words: int
    wer: Mapping[str, float]
    relative_wer_reduction: float


def _row(label: str, tally: Tally) -> ReportRow:
    return ReportRow(label, tally.n_cuts, tally.n_words, {s: tally.wer(s) for s in SYSTEMS},
                     tally.relative_wer_reduction)


@dataclass
class EvalReport:
    """Result of :func:`evaluate`: per-split tallies plus what was evaluated."""

    rescored: Path
    references: Path
    by: tuple[str, ...]
    normalizer: TextNormalizer
    splits: dict[str, SplitReport]

    def to_dict(self) -> dict:
        """The ``report.json`` content: ``{"unannotated": {...}, "annotated": {...}}``."""
        return {name: self.splits[name].to_dict() for name in SPLITS}

    def rows(self, split: str) -> list[ReportRow]:
        """Table rows of one split: overall first, then every value of every ``--by`` field."""
        report = self.splits[split]
        rows = [_row("overall", report.overall)]
        for name in self.by:
            rows.extend(_row(f"{name} = {value}", tally) for value, tally in report.groups(name))
        return rows

    @property
    def n_missing_references(self) -> int:
        return sum(split.n_missing_references for split in self.splits.values())


# ---------------------------------------------------------------------------
# reading inputs


@dataclass(frozen=True)
class Reference:
    """A cut's true transcript and the ``--by`` values its reference file offers."""

    text: str
    fields: Mapping[str, str]


def _first_value(layers: Iterable[Mapping], name: str) -> object | None:
    """The first non-None ``name`` among ``layers`` (dicts searched in order)."""
    for layer in layers:
        value = layer.get(name)
        if value is not None:
            return value
    return None


def _supervision_layers(supervisions: Iterable[SupervisionSegment]) -> list[Mapping]:
    """Lookup layers of supervisions: their attributes (speaker, language, gender), then their custom."""
    supervisions = list(supervisions)
    attributes = [{a: getattr(s, a, None) for a in SUPERVISION_ATTRIBUTES} for s in supervisions]
    return attributes + [s.custom or {} for s in supervisions]


def _cut_layers(cut: Cut) -> list[Mapping]:
    """Lookup layers of a cut: its custom, then its supervisions' attributes and custom."""
    return [getattr(cut, "custom", None) or {}, *_supervision_layers(cut.supervisions)]


def _pick(layers: list[Mapping], names: Sequence[str]) -> dict[str, str]:
    """The values of ``names`` found in ``layers`` (absent names are left out)."""
    values = {name: _first_value(layers, name) for name in names}
    return {name: str(value) for name, value in values.items() if value is not None}


def _reference_of(item: object, by: Sequence[str]) -> tuple[str, Reference | None]:
    """The (cut id, reference) a supervision or cut line holds; None when it carries no text."""
    if isinstance(item, SupervisionSegment):
        layers: list[Mapping] = [item.custom or {}, *_supervision_layers([item])[:1]]
        text = item.text
        return item.id, None if text is None else Reference(text, _pick(layers, by))
    assert isinstance(item, Cut)
    texts = [s.text for s in item.supervisions if s.text is not None]
    return item.id, Reference(" ".join(texts), _pick(_cut_layers(item), by)) if texts else None


def load_references(path: str | Path, by: Sequence[str] = ()) -> dict[str, Reference]:
    """Cut id -> reference from a lhotse supervision manifest (id = cut id) or a cut manifest.

    Lines without text are skipped (they give no reference); a cut id given twice is an error.
    Only the ``by`` fields are kept from each line, so memory stays proportional to the cut count.
    """
    path = check_readable(path)
    references: dict[str, Reference] = {}
    for line_number, data in iter_json_lines(path):
        try:
            item = deserialize_item(data)
        except Exception as error:  # noqa: BLE001 - lhotse raises many kinds
            raise InputError(path, f"not a lhotse supervision or cut ({error})", line=line_number,
                             cut_id=str(data.get("id"))) from None
        if not isinstance(item, (SupervisionSegment, Cut)):
            raise InputError(path, f"expected a supervision or a cut, found a {type(item).__name__}",
                             line=line_number)
        cut_id, reference = _reference_of(item, by)
        if reference is None:
            continue
        if cut_id in references:
            raise InputError(path, "a second reference for the same cut id", line=line_number, cut_id=cut_id)
        references[cut_id] = reference
    if not references:
        raise InputError(path, "holds no reference text (expected lhotse supervisions or cuts with text)")
    return references


def choral_output(cut: Cut, source: str | Path) -> tuple[str, str]:
    """The cut's choral label and where it came from (reference, propagated or teacher)."""
    raw = choral_entry(cut, source)
    return str(raw["text"] or ""), str(raw.get("source") or UNKNOWN)


def _by_values(cut: Cut, reference: Reference, by: Sequence[str]) -> dict[str, str]:
    """Each ``--by`` value: the rescored cut's fields first, then the reference's, else ``unknown``."""
    found = _pick(_cut_layers(cut), by)
    return {name: found.get(name, reference.fields.get(name, UNKNOWN)) for name in by}


def _check_by(by: Sequence[str]) -> tuple[str, ...]:
    """Field names, stripped and de-duplicated in order; an empty name is an error."""
    names = tuple(dict.fromkeys(name.strip() for name in by))
    if any(not name for name in names):
        raise ChoralError("--by needs a field name (e.g. --by accent)")
    return names


# ---------------------------------------------------------------------------
# the stage


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

    A rescored cut without a reference is an InputError naming the references file and
    the cut, unless ``allow_missing`` (then it is skipped and counted per split).
    """
    rescored, references = check_readable(rescored), check_readable(references)
    by = _check_by(by)
    progress.task("reading references", None)
    truth = load_references(references, by)
    report = EvalReport(rescored, references, by, normalizer, {name: SplitReport(by) for name in SPLITS})
    progress.task("scoring cuts", None)
    for cut in iter_cuts(rescored):
        progress.advance()
        split = report.splits["annotated" if is_annotated(cut) else "unannotated"]
        hypotheses = [h.text for h in nbest(cut, rescored)]
        label, source = choral_output(cut, rescored)
        reference = truth.get(cut.id)
        if reference is None:
            if not allow_missing:
                raise InputError(references, f"no reference for this cut of {rescored} "
                                             "(--allow-missing skips and counts such cuts)", cut_id=cut.id)
            split.n_missing_references += 1
            continue
        score = score_cut(reference.text, hypotheses[0], label, hypotheses, normalizer)
        split.add(score, _by_values(cut, reference, by), source)
    return report


# ---------------------------------------------------------------------------
# report files


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put the three files."""

    json: Path
    markdown: Path
    chart: Path


def percent(value: float) -> str:
    """A WER or reduction as a percentage with two decimals."""
    return f"{100 * value:.2f}%"


def _markdown_table(rows: list[ReportRow]) -> list[str]:
    lines = ["| slice | cuts | words | teacher WER | choral WER | oracle WER | relative WER reduction |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row.label} | {row.n_cuts:,} | {row.n_words:,} | {percent(row.wer['teacher'])} | "
                     f"{percent(row.wer['choral'])} | {percent(row.wer['oracle'])} | "
                     f"{percent(row.relative_wer_reduction)} |")
    return lines


def _markdown_split(report: EvalReport, split: str) -> list[str]:
    data = report.splits[split]
    title = "Unannotated cuts (headline)" if split == "unannotated" else "Annotated cuts"
    lines = [f"## {title}", ""]
    if data.overall.n_cuts == 0:
        lines.append("No cuts in this split.")
    else:
        lines.extend(_markdown_table(report.rows(split)))
    sources = data.to_dict()["sources"]
    lines += ["", "Source of the choral label: " + ", ".join(f"{k} {v:,}" for k, v in sources.items()) + "."]
    if data.n_missing_references:
        lines.append(f"Skipped without a reference: {data.n_missing_references:,} cuts.")
    return lines + [""]


def render_markdown(report: EvalReport) -> str:
    """``report.md``: one table per split, rows = overall and each ``--by`` value."""
    norm = report.normalizer
    lines = ["# choral eval", "",
             f"- rescored manifest: `{report.rescored}`",
             f"- references: `{report.references}`",
             f"- text normaliser: digits={norm.digits}, lowercase={norm.lowercase}, punctuation removed",
             "- WER is corpus-level (word errors / reference words); oracle = best n-best entry per cut; "
             "relative WER reduction = (teacher - choral) / teacher.", ""]
    for split in SPLITS:
        lines.extend(_markdown_split(report, split))
    return "\n".join(lines)


def _chart_groups(report: EvalReport) -> tuple[list[str], list[Tally], str]:
    """Bars of the chart: overall plus the largest values of the first ``--by`` field (unannotated split)."""
    data = report.splits["unannotated"]
    labels, tallies, note = ["overall"], [data.overall], ""
    if report.by:
        groups = data.groups(report.by[0])
        if len(groups) > MAX_CHART_GROUPS:
            note = f" ({MAX_CHART_GROUPS} largest of {len(groups)} values)"
            largest = sorted(groups, key=lambda item: -item[1].n_words)[:MAX_CHART_GROUPS]
            groups = sorted(largest)
        labels += [value for value, _ in groups]
        tallies += [tally for _, tally in groups]
    return labels, tallies, note


def render_chart(report: EvalReport) -> bytes:
    """``report.png``: teacher vs choral WER on unannotated cuts, overall and per first ``--by`` value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels, tallies, note = _chart_groups(report)
    figure = Figure(figsize=(min(max(6.0, 0.8 * len(labels) + 2.0), 30.0), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = range(len(labels))
    width = 0.38
    for offset, system, color in ((-width / 2, "teacher", "#9e9e9e"), (width / 2, "choral", "#1f77b4")):
        heights = [100 * tally.wer(system) for tally in tallies]
        bars = axes.bar([p + offset for p in positions], heights, width, label=system, color=color)
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    crowded = len(labels) > 6
    axes.set_xticks(list(positions), labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.set_xlabel(report.by[0] if report.by else "all unannotated cuts")
    axes.set_ylabel("WER (%)")
    axes.set_title(f"Teacher vs choral WER on unannotated cuts{note}")
    axes.legend()
    axes.margins(y=0.15)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_report(report: EvalReport, out_dir: str | Path) -> ReportPaths:
    """Write ``report.json``, ``report.md`` and ``report.png`` into ``out_dir``, each atomically.

    All three are rendered in memory first, so a rendering failure writes nothing.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ChoralError(f"{out_dir}: exists and is not a folder")
    markdown, chart = render_markdown(report), render_chart(report)
    paths = ReportPaths(out_dir / "report.json", out_dir / "report.md", out_dir / "report.png")
    try:
        write_json(report.to_dict(), paths.json)
        with atomic_output(paths.markdown) as tmp:
            tmp.write_text(markdown, encoding="utf-8")
        with atomic_output(paths.chart) as tmp:
            tmp.write_bytes(chart)
    except OSError as error:
        raise ChoralError(f"{out_dir}: cannot write the report ({error.strerror or error})") from None
    return paths
