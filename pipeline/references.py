"""Reference transcripts of cuts, from the file a team has them in: the one reader.

``choral prepare --annotations`` (the seeds), ``choral eval --references`` (the truth) and anything else
that reads reference texts take any of:

- a Kaldi ``text`` file (``<cut id> <transcript>`` per line);
- a lhotse supervision manifest (supervision id = cut id);
- a lhotse cut manifest (the text of each cut's supervisions).

A supervision or cut gives a reference when :func:`.fields.joined_text` finds text in it (the same rule
that makes a cut annotated); lines without text are skipped, a cut id given twice is an error, and a file
with no reference at all is an error rather than an empty result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from lhotse import SupervisionSegment
from lhotse.cut import Cut
from lhotse.serialization import deserialize_item

from .errors import InputError
from .fields import field_values, joined_text, reference_text, supervision_values
from .kaldi import iter_table
from .manifest import check_readable, iter_json_lines

JSON_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".gz")


@dataclass(frozen=True)
class Reference:
    """A cut's true transcript (whitespace-stripped) and the ``by`` values its reference file offers."""

    text: str
    fields: Mapping[str, str] = field(default_factory=dict)


def _is_json_lines(path: Path) -> bool:
    """A lhotse manifest (by its name, or a first line that is a JSON object) rather than a Kaldi ``text``."""
    if path.name.endswith(JSON_SUFFIXES):
        return True
    try:
        with path.open(encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False  # the Kaldi reader names the problem
    return first.lstrip().startswith("{")


def _from_kaldi(path: Path) -> Iterator[tuple[int, str, Reference | None]]:
    for number, cut_id, text in iter_table(path):
        if not text:
            raise InputError(path, f"utterance {cut_id!r} has no transcript", line=number)
        yield number, cut_id, Reference(text)


def _from_lhotse(path: Path, by: Sequence[str]) -> Iterator[tuple[int, str, Reference | None]]:
    for number, data in iter_json_lines(path):
        try:
            item = deserialize_item(data)
        except Exception as error:  # lhotse raises many kinds
            raise InputError(path, f"not a lhotse supervision or cut ({error})", line=number,
                             cut_id=str(data.get("id"))) from None
        if isinstance(item, SupervisionSegment):
            text, values = joined_text([item.text]), supervision_values(item, by)
        elif isinstance(item, Cut):
            text, values = reference_text(item), field_values(item, by)
        else:
            raise InputError(path, f"expected a supervision or a cut, found a {type(item).__name__}", line=number)
        yield number, item.id, None if text is None else Reference(text.strip(), values)


def read_references(path: str | Path, by: Sequence[str] = ()) -> dict[str, Reference]:
    """Cut id -> reference from a Kaldi ``text`` file, a lhotse supervision manifest or a lhotse cut manifest.

    Only the ``by`` fields are kept from each line, so memory stays proportional to the cut count.
    """
    path = check_readable(path)
    lines = _from_lhotse(path, by) if _is_json_lines(path) else _from_kaldi(path)
    references: dict[str, Reference] = {}
    for number, cut_id, reference in lines:
        if reference is None:
            continue
        if cut_id in references:
            raise InputError(path, "a second reference for the same cut id", line=number, cut_id=cut_id)
        references[cut_id] = reference
    if not references:
        raise InputError(path, "holds no reference text (expected a Kaldi text file, or lhotse supervisions "
                               "or cuts with text)")
    return references
