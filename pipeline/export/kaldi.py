"""Export format ``kaldi``: the data dir ``<prefix>_<split>/`` as ``utils/validate_data_dir.sh`` demands.

wav.scp, text, utt2spk and spk2utt, plus segments when cuts are parts of longer
recordings; every table sorted in C byte order. Kaldi wants utterance order and
speaker order to agree, so utterance ids get a speaker prefix when they would not.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lhotse.audio import Recording
from lhotse.cut import Cut

from ..errors import InputError
from ..manifest import atomic_directory
from .cuts import first_supervision_value, is_segment, single_source
from .pseudo_labels import Label
from .registry import ExportPaths, register_export_format

_WHITESPACE = re.compile(r"\s")


@dataclass
class KaldiUtterance:
    """One utterance of a Kaldi data dir, before the tables are built."""

    utt: str
    speaker: str
    recording: str
    wav: str
    start: float
    end: float
    segment: bool
    text: str


def _kaldi_id(value: str, what: str, cut: Cut, source: Path) -> str:
    """Kaldi ids are whitespace-free tokens."""
    if not value or _WHITESPACE.search(value):
        raise InputError(source, f"{what} {value!r} cannot be a Kaldi id (empty or contains whitespace)",
                         cut_id=cut.id)
    return value


def kaldi_wav(recording: Recording, channel: int, path: str, kind: str) -> str:
    """The wav.scp entry: the file itself for mono WAV, else a sox pipe that yields 16-bit mono WAV."""
    if kind == "command":
        return f"{path} |"
    if recording.num_channels == 1 and path.lower().endswith(".wav") and not _WHITESPACE.search(path):
        return path
    command = ["sox", path, "-t", "wav", "-b", "16", "-"]
    if recording.num_channels > 1:
        command += ["remix", str(channel + 1)]
    return " ".join(shlex.quote(part) for part in command) + " |"


def kaldi_utterance(cut: Cut, label: Label, source: Path) -> KaldiUtterance:
    """What the Kaldi tables need from one cut; speakerless cuts are their own speaker."""
    recording, path = single_source(cut, source, "Kaldi", allowed=("file", "command"))
    if recording.sources[0].type == "command" and recording.num_channels != 1:
        raise InputError(source, f"recording {recording.id} is a multi-channel command; Kaldi needs one channel",
                         cut_id=cut.id)
    utt = _kaldi_id(cut.id, "cut id", cut, source)
    speaker = _kaldi_id(first_supervision_value(cut, "speaker") or utt, "speaker", cut, source)
    key = recording.id if recording.num_channels == 1 else f"{recording.id}-ch{cut.channel}"
    return KaldiUtterance(
        utt=utt, speaker=speaker, recording=_kaldi_id(key, "recording id", cut, source),
        wav=kaldi_wav(recording, cut.channel, path, recording.sources[0].type),
        start=cut.start, end=cut.end, segment=is_segment(cut), text=label.text,
    )


def c_order(value: str) -> bytes:
    """Sort key of LC_ALL=C ``sort``: raw byte order."""
    return value.encode("utf-8")


def speaker_order_agrees(utterances: list[KaldiUtterance]) -> bool:
    """True when sorting by utterance id also groups speakers in sorted order (Kaldi's requirement)."""
    by_utt = sorted(utterances, key=lambda u: c_order(u.utt))
    by_speaker = sorted(utterances, key=lambda u: (c_order(u.speaker), c_order(u.utt)))
    return [u.utt for u in by_utt] == [u.utt for u in by_speaker]


def prefix_speakers(utterances: list[KaldiUtterance]) -> int:
    """Rename utterances to ``<spk>-<utt>`` unless already speaker-prefixed; return how many were renamed."""
    renamed = 0
    for u in utterances:
        if u.utt != u.speaker and not u.utt.startswith((f"{u.speaker}-", f"{u.speaker}_")):
            u.utt = f"{u.speaker}-{u.utt}"
            renamed += 1
    return renamed


def _check_unique(utterances: list[KaldiUtterance], source: Path) -> None:
    seen: set[str] = set()
    for u in utterances:
        if u.utt in seen:
            raise InputError(source, f"two cuts share the Kaldi utterance id {u.utt!r}")
        seen.add(u.utt)


def _order_utterances(utterances: list[KaldiUtterance], source: Path) -> int:
    """Make utterance and speaker order agree, renaming if needed; return how many were renamed."""
    _check_unique(utterances, source)
    if speaker_order_agrees(utterances):
        return 0
    renamed = prefix_speakers(utterances)
    _check_unique(utterances, source)
    if not speaker_order_agrees(utterances):
        raise InputError(source, "speaker ids order differently from utterance ids even after prefixing "
                                 "(one speaker id is a prefix of another?); rename the speakers")
    return renamed


def kaldi_tables(utterances: list[KaldiUtterance]) -> dict[str, list[tuple[str, str]]]:
    """The data dir's files as (key, value) rows; segments only when some cut is part of a recording."""
    with_segments = any(u.segment for u in utterances)
    spk2utt: dict[str, list[str]] = {}
    for u in utterances:
        spk2utt.setdefault(u.speaker, []).append(u.utt)
    tables: dict[str, list[tuple[str, str]]] = {
        "text": [(u.utt, u.text) for u in utterances],
        "utt2spk": [(u.utt, u.speaker) for u in utterances],
        "spk2utt": [(spk, " ".join(sorted(utts, key=c_order))) for spk, utts in spk2utt.items()],
    }
    if with_segments:
        tables["segments"] = [(u.utt, f"{u.recording} {u.start:.3f} {u.end:.3f}") for u in utterances]
        tables["wav.scp"] = sorted({(u.recording, u.wav) for u in utterances})
    else:
        tables["wav.scp"] = [(u.utt, u.wav) for u in utterances]
    return tables


def _check_recordings(wav_rows: list[tuple[str, str]], source: Path) -> None:
    """One wav.scp entry per recording id, or the manifest disagrees with itself."""
    keys = [key for key, _ in wav_rows]
    if len(keys) != len(set(keys)):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise InputError(source, f"recording {duplicate!r} points to different audio in different cuts")


def _write_table(path: Path, rows: list[tuple[str, str]]) -> None:
    """``key value`` lines sorted in C byte order."""
    lines = [f"{key} {value}\n" for key, value in sorted(rows, key=lambda row: c_order(row[0]))]
    path.write_text("".join(lines), encoding="utf-8")


@register_export_format("kaldi", output="{prefix}_{split}/",
                        description="data dir: wav.scp, text, utt2spk, spk2utt, segments; C byte order, utterance "
                                    "ids speaker-prefixed when Kaldi's sort order needs it")
def write_kaldi(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
    """Collect all utterances (sorting needs them all), then write the data dir atomically."""
    with atomic_directory(paths.primary) as tmp:
        utterances = [kaldi_utterance(cut, label, source) for cut, label in items]
        renamed = _order_utterances(utterances, source)
        tables = kaldi_tables(utterances)
        _check_recordings(tables["wav.scp"], source)
        for name, rows in tables.items():
            _write_table(tmp / name, rows)
    return renamed

