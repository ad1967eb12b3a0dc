"""What the format writers read from a cut besides its label: supervision metadata and its audio file.

NeMo and Kaldi manifests point at audio files that the trainer reads itself, so
they accept only a cut whose recording is one untransformed file (or, for Kaldi,
a command), and they address a part of a longer recording by offsets.
"""

from __future__ import annotations

import os
from pathlib import Path

from lhotse.audio import Recording
from lhotse.cut import Cut, MonoCut

from ..errors import InputError

# A cut shorter than its recording by more than this (seconds) is a segment of it.
SEGMENT_TOLERANCE = 1e-3


def first_supervision_value(cut: Cut, name: str) -> str | None:
    """``speaker``/``language``/``gender`` of the first original supervision that has one."""
    return next((getattr(s, name) for s in cut.supervisions if getattr(s, name) is not None), None)


def is_segment(cut: Cut) -> bool:
    """True when the cut covers only part of its recording."""
    return cut.start > SEGMENT_TOLERANCE or cut.end < cut.recording.duration - SEGMENT_TOLERANCE


def single_source(cut: Cut, source: Path, target: str, allowed: tuple[str, ...] = ("file",)) -> tuple[Recording, str]:
    """The cut's recording and its one audio source, if ``target`` can read it as it is."""
    if not isinstance(cut, MonoCut) or not cut.has_recording:
        raise InputError(source, f"{target} export needs a single-channel cut with a recording", cut_id=cut.id)
    recording = cut.recording
    if len(recording.sources) != 1 or recording.sources[0].type not in allowed:
        kinds = ", ".join(s.type for s in recording.sources) or "none"
        raise InputError(source, f"recording {recording.id} is not a single audio file (sources: {kinds}); "
                                 f"{target} needs one", cut_id=cut.id)
    if recording.transforms:
        raise InputError(source, f"recording {recording.id} has audio transforms (e.g. resampling, speed); "
                                 f"{target} would read the untransformed file", cut_id=cut.id)
    audio = recording.sources[0]
    return recording, audio.source if audio.type != "file" else os.path.abspath(str(audio.source))
