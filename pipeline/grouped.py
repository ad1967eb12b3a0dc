"""Reading the grouped manifest (``choral group``'s output): one validated record per cut.

The graph, tune and propagate stages read the same things from it, in manifest order:
the cut's group (``custom.group``, required: the manifest must come from
``choral group``), its validated n-best list and its reference text when the cut
is annotated. They read it through this module, so a missing group or a
malformed n-best list fails the same way in every stage.

Two readers: :func:`iter_grouped` builds the lhotse cut too (the graph stage loads the
cut's arrays through it); :func:`iter_grouped_fields` reads the JSON lines only
(:func:`~.manifest.iter_cut_dicts`, no lhotse objects), several times faster, for the
stages that need just the text fields. ``keep(group)`` lets a reader skip the n-best
lists of the groups it does not need (tune reads only the groups of annotated cuts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lhotse.cut import Cut

from .errors import InputError
from .fields import Hypothesis, custom_field, nbest, reference_text, snr_db
from .manifest import iter_cut_dicts, iter_cuts

__all__ = ["GroupedCut", "GroupedFields", "formed_by_sound", "group_of", "iter_grouped", "iter_grouped_fields"]

SOUND_PREFIX = "a"  # group names choral group gives to groups formed by sound alone (its step 5)


def formed_by_sound(group: str) -> bool:
    """Whether ``choral group`` formed this group by sound alone (its cuts' hypotheses share too few words):
    the graph links such cuts to their nearest neighbours too, whatever the learned threshold."""
    return group.startswith(SOUND_PREFIX)


@dataclass(frozen=True)
class GroupedCut:
    """One cut of a grouped manifest with the fields every later stage needs, validated."""

    cut: Cut
    group: str
    hypotheses: list[Hypothesis]  # the n-best list, best first, as the teacher wrote it
    reference: str | None         # the reference transcript (annotated cuts only), not normalised


@dataclass(frozen=True)
class GroupedFields:
    """The text fields of one cut of a grouped manifest (no lhotse object), validated."""

    cut_id: str
    group: str
    hypotheses: list[Hypothesis]  # empty for a cut whose group the reader was told to skip
    reference: str | None
    snr_db: float | None = None   # the audio's energy-percentile SNR (decode's custom.snr_db; None: not measured)


def group_of(cut: Cut | Mapping, grouped: Path) -> str:
    """The cut's ``custom.group``; an InputError naming the file and cut when it has none."""
    group = custom_field(cut, "group")
    if group is None:
        cut_id = str(cut["id"]) if isinstance(cut, Mapping) else cut.id
        raise InputError(grouped, "cut has no custom.group; run `choral group` first", cut_id=cut_id)
    return str(group)


def iter_grouped(grouped: Path) -> Iterator[GroupedCut]:
    """Every cut of ``grouped`` in manifest order; an InputError names the file and cut at fault."""
    for cut in iter_cuts(grouped):
        group = group_of(cut, grouped)
        yield GroupedCut(cut=cut, group=group, hypotheses=nbest(cut, grouped), reference=reference_text(cut))


def iter_grouped_fields(grouped: Path, keep: Callable[[str], bool] | None = None) -> Iterator[GroupedFields]:
    """:func:`iter_grouped`'s records without the lhotse cut, read as JSON; the cuts of a group that
    ``keep`` refuses come with no hypotheses (their n-best lists are neither parsed nor checked)."""
    for data in iter_cut_dicts(grouped):
        group = group_of(data, grouped)
        wanted = keep is None or keep(group)
        yield GroupedFields(cut_id=str(data["id"]), group=group,
                            hypotheses=nbest(data, grouped) if wanted else [], reference=reference_text(data),
                            snr_db=snr_db(data, grouped) if wanted else None)
