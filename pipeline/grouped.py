"""Reading the grouped manifest (``choral group``'s output): one validated record per cut.

The graph and propagate stages read the same things from it, in manifest order:
the cut's group (``custom.group``, required: the manifest must come from
``choral group``), its validated n-best list and its reference text when the cut
is annotated. Both read it through :func:`iter_grouped`, so a missing group or a
malformed n-best list fails the same way in either stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lhotse.cut import Cut

from .errors import InputError
from .fields import Hypothesis, custom_field, nbest, reference_text
from .manifest import iter_cuts

__all__ = ["GroupedCut", "iter_grouped"]


@dataclass(frozen=True)
class GroupedCut:
    """One cut of a grouped manifest with the fields every later stage needs, validated."""

    cut: Cut
    group: str
    hypotheses: list[Hypothesis]  # the n-best list, best first, as the teacher wrote it
    reference: str | None         # the reference transcript (annotated cuts only), not normalised


def iter_grouped(grouped: Path) -> Iterator[GroupedCut]:
    """Every cut of ``grouped`` in manifest order; an InputError names the file and cut at fault."""
    for cut in iter_cuts(grouped):
        group = custom_field(cut, "group")
        if group is None:
            raise InputError(grouped, "cut has no custom.group; run `choral group` first", cut_id=cut.id)
        yield GroupedCut(cut=cut, group=str(group), hypotheses=nbest(cut, grouped), reference=reference_text(cut))
