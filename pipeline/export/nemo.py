"""Export format ``nemo``: ``<prefix>_<split>.json``, one JSON object per line.

Each line names the audio file NeMo reads itself, the duration and the text,
and an ``offset`` when the cut is part of a longer recording.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from lhotse.cut import Cut

from ..errors import InputError
from ..manifest import atomic_output
from .cuts import is_segment, single_source
from .pseudo_labels import Label
from .registry import ExportPaths, register_export_format


def nemo_entry(cut: Cut, label: Label, source: Path) -> dict[str, object]:
    """One NeMo manifest line; ``offset`` only when the cut is part of a longer recording."""
    recording, path = single_source(cut, source, "NeMo")
    if recording.num_channels != 1:
        raise InputError(source, f"recording {recording.id} has {recording.num_channels} channels; "
                                 "NeMo manifests address whole files", cut_id=cut.id)
    entry: dict[str, object] = {"audio_filepath": path}
    if is_segment(cut):
        entry["offset"] = round(cut.start, 6)
    entry["duration"] = round(cut.duration, 6)
    entry["text"] = label.text
    return entry


@register_export_format("nemo", output="{prefix}_{split}.json",
                        description="JSON lines with audio_filepath, duration, text, offset for segments")
def write_nemo(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
    """Write the NeMo JSON-lines manifest atomically."""
    with atomic_output(paths.primary) as tmp, open(tmp, "w", encoding="utf-8") as stream:
        for cut, label in items:
            stream.write(json.dumps(nemo_entry(cut, label, source), ensure_ascii=False) + "\n")
    return 0
