"""``choral export``: turn a rescored manifest into the student's training manifests.

One streaming pass over ``rescored.jsonl.gz``: every cut's pseudo-label
(``custom.choral``; annotated cuts keep their reference) is checked, filtered by
confidence, and written in one of three shapes:

- ``lhotse``: ``<prefix>_cuts_<split>.jsonl.gz`` with one supervision per cut
  (icefall's shape), optionally with 80-dim fbank in ``<prefix>_feats_<split>.lca``;
- ``nemo``: ``<prefix>_<split>.json``, one JSON object per line;
- ``kaldi``: the data dir ``<prefix>_<split>/`` (wav.scp, text, utt2spk, spk2utt,
  and segments when cuts are parts of longer recordings), sorted as
  ``utils/validate_data_dir.sh`` demands.

Every output appears under its real name only when complete, and a
``.meta.json`` sidecar lets an unchanged rerun be skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Mapping

from lhotse import Fbank, FbankConfig, LilcomChunkyWriter, SupervisionSegment
from lhotse.audio import Recording
from lhotse.cut import Cut, MonoCut, MultiCut
from lhotse.features.base import FeatureExtractor
from lhotse.features.io import FeaturesWriter
from lhotse.utils import fastcopy

from .errors import ChoralError, InputError
from .fields import choral_entry, reference_text
from .manifest import CutWriter, atomic_output, check_readable, iter_cuts, temporary_name
from .meta import StageRecord, is_up_to_date, write_meta
from .progress import NullProgress, Progress

Format = Literal["lhotse", "nemo", "kaldi"]
FORMATS: tuple[str, ...] = ("lhotse", "nemo", "kaldi")
SOURCES: tuple[str, ...] = ("reference", "propagated", "teacher")
# Pipeline-internal cut fields: meaningless to a student recipe, and embeddings/frames
# point into files that are not part of the export.
PIPELINE_FIELDS: frozenset[str] = frozenset({"choral", "nbest", "embedding", "frames", "group", "group_size"})
FBANK_BINS = 80
# A cut shorter than its recording by more than this (seconds) is a segment of it.
SEGMENT_TOLERANCE = 1e-3
_SAFE_NAME = re.compile(r"^[^\s/\\.][^\s/\\]*$")
_WHITESPACE = re.compile(r"\s")

# Drop reasons, as the summary names them.
EMPTY = "empty pseudo-label"
LOW_CONFIDENCE = "confidence < --min-confidence"
HIGH_WER = "WER estimate > --max-wer-estimate"


@dataclass(frozen=True)
class ExportConfig:
    """What to write and which cuts to keep."""

    format: Format = "lhotse"
    prefix: str = "choral"
    split: str = "train"
    min_confidence: float | None = None
    max_wer_estimate: float | None = None
    with_fbank: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ChoralError(f"unknown export format {self.format!r}; choose one of {', '.join(FORMATS)}")
        for option, value in (("--prefix", self.prefix), ("--split", self.split)):
            if not _SAFE_NAME.match(value):
                raise ChoralError(f"{option} {value!r} must be a non-empty file-name part without spaces or slashes")
        bounds = {"--min-confidence": self.min_confidence, "--max-wer-estimate": self.max_wer_estimate}
        for option, bound in bounds.items():
            if bound is not None and not 0.0 <= bound <= 1.0:
                raise ChoralError(f"{option} must lie between 0 and 1")
        if self.with_fbank and self.format != "lhotse":
            raise ChoralError("--with-fbank only applies to --format lhotse; NeMo and Kaldi compute their own features")


@dataclass(frozen=True)
class ExportPaths:
    """Where one export writes: the primary output (manifest, or Kaldi dir) and the feature archive."""

    primary: Path
    features: Path | None = None

    @property
    def all(self) -> list[Path]:
        return [self.primary] + ([self.features] if self.features is not None else [])


def export_paths(out_dir: str | Path, config: ExportConfig) -> ExportPaths:
    """The file names recipes expect: icefall's ``<prefix>_cuts_<split>.jsonl.gz`` and friends."""
    out_dir = Path(out_dir)
    if config.format == "lhotse":
        features = out_dir / f"{config.prefix}_feats_{config.split}.lca" if config.with_fbank else None
        return ExportPaths(out_dir / f"{config.prefix}_cuts_{config.split}.jsonl.gz", features)
    if config.format == "nemo":
        return ExportPaths(out_dir / f"{config.prefix}_{config.split}.json")
    return ExportPaths(out_dir / f"{config.prefix}_{config.split}")


@dataclass(frozen=True)
class Label:
    """The transcript a cut is exported with, and where it came from."""

    text: str
    confidence: float
    teacher_text: str
    source: str

    def provenance(self) -> dict[str, object]:
        return {"teacher_text": self.teacher_text, "confidence": self.confidence, "source": self.source}


@dataclass
class SourceTally:
    """Kept and dropped cuts (and their audio seconds) of one label source."""

    kept: int = 0
    dropped: int = 0
    kept_seconds: float = 0.0
    dropped_seconds: float = 0.0


@dataclass(frozen=True)
class ExportSummary:
    """What ``choral export`` did, for the end-of-run summary."""

    output: Path
    skipped: bool
    format: str = "lhotse"
    by_source: Mapping[str, SourceTally] = field(default_factory=dict)
    dropped_by_reason: Mapping[str, int] = field(default_factory=dict)
    features: Path | None = None
    renamed_utterances: int = 0
    seconds: float = 0.0

    @property
    def n_kept(self) -> int:
        return sum(t.kept for t in self.by_source.values())

    @property
    def n_dropped(self) -> int:
        return sum(t.dropped for t in self.by_source.values())

    @property
    def hours_kept(self) -> float:
        return sum(t.kept_seconds for t in self.by_source.values()) / 3600

    @property
    def hours_dropped(self) -> float:
        return sum(t.dropped_seconds for t in self.by_source.values()) / 3600


# --- reading and filtering -------------------------------------------------------------------------------------


def _confidence(entry: dict, cut: Cut, source: Path) -> float:
    """The label's confidence, a probability; round-off just outside [0, 1] is clipped."""
    value = entry.get("confidence")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e-6 <= value <= 1.0 + 1e-6:
        raise InputError(source, f"custom.choral confidence must be a number in [0, 1], found {value!r}",
                         cut_id=cut.id)
    return min(max(float(value), 0.0), 1.0)


def _text(entry: dict, key: str, cut: Cut, source: Path) -> str:
    """A text field of the label with whitespace collapsed (one line, single spaces); None reads as empty."""
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(source, f"custom.choral {key} must be a string", cut_id=cut.id)
    return " ".join((value or "").split())


def pseudo_label(cut: Cut, source: Path) -> Label:
    """The cut's export label, validated; annotated cuts are exported with their reference text."""
    entry = choral_entry(cut, source)
    confidence = _confidence(entry, cut, source)
    origin = entry.get("source")
    if origin not in SOURCES:
        raise InputError(source, f"custom.choral source must be one of {', '.join(SOURCES)}, found {origin!r}",
                         cut_id=cut.id)
    teacher_text = _text(entry, "teacher_text", cut, source)
    reference = reference_text(cut)
    if reference is not None:
        return Label(" ".join(reference.split()), confidence, teacher_text, "reference")
    if origin == "reference":
        raise InputError(source, "custom.choral source is 'reference' but the cut has no reference text",
                         cut_id=cut.id)
    return Label(_text(entry, "text", cut, source), confidence, teacher_text, origin)


def drop_reason(label: Label, config: ExportConfig) -> str | None:
    """Why a cut is left out of the training set, or None to keep it; references are always kept."""
    if label.source == "reference":
        return None
    if not label.text:
        return EMPTY
    if config.min_confidence is not None and label.confidence < config.min_confidence:
        return LOW_CONFIDENCE
    # WER estimate = 1 - confidence; the epsilon keeps 1 - 0.7 from counting as above 0.3.
    if config.max_wer_estimate is not None and 1.0 - label.confidence > config.max_wer_estimate + 1e-9:
        return HIGH_WER
    return None


class _Tally:
    """Counts kept and dropped cuts by source and drop reason as the pass goes."""

    def __init__(self) -> None:
        self.by_source: dict[str, SourceTally] = {}
        self.by_reason: dict[str, int] = {}

    def count(self, label: Label, duration: float, reason: str | None) -> None:
        tally = self.by_source.setdefault(label.source, SourceTally())
        if reason is None:
            tally.kept += 1
            tally.kept_seconds += duration
        else:
            tally.dropped += 1
            tally.dropped_seconds += duration
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1

    @property
    def n_kept(self) -> int:
        return sum(t.kept for t in self.by_source.values())


def _kept_cuts(rescored: Path, config: ExportConfig, tally: _Tally, progress: Progress) -> Iterator[tuple[Cut, Label]]:
    """Stream the cuts that pass the filters with their labels; fail if none does."""
    for cut in iter_cuts(rescored):
        if not isinstance(cut, (MonoCut, MultiCut)):
            raise InputError(rescored, f"export needs cuts of a single recording, found a {type(cut).__name__}",
                             cut_id=cut.id)
        label = pseudo_label(cut, rescored)
        reason = drop_reason(label, config)
        tally.count(label, cut.duration, reason)
        progress.advance()
        if reason is None:
            yield cut, label
    if tally.n_kept == 0:
        raise ChoralError(f"{rescored}: every cut was dropped by the filters "
                          f"({', '.join(sorted(tally.by_reason))}); nothing to export")


# --- lhotse -----------------------------------------------------------------------------------------------------


def _first_supervision_value(cut: Cut, name: str) -> str | None:
    """``speaker``/``language``/``gender`` of the first original supervision that has one."""
    return next((getattr(s, name) for s in cut.supervisions if getattr(s, name) is not None), None)


def training_cut(cut: Cut, label: Label) -> Cut:
    """The cut with exactly one supervision spanning it: the label as text, provenance in its custom."""
    supervision = SupervisionSegment(
        id=cut.id,
        recording_id=cut.recording_id if (cut.has_recording or cut.has_features) else cut.id,
        start=0.0,
        duration=cut.duration,
        channel=cut.channel,
        text=label.text,
        speaker=_first_supervision_value(cut, "speaker"),
        language=_first_supervision_value(cut, "language"),
        gender=_first_supervision_value(cut, "gender"),
        custom=label.provenance(),
    )
    custom = {k: v for k, v in (cut.custom or {}).items() if k not in PIPELINE_FIELDS}
    return fastcopy(cut, supervisions=[supervision], custom=custom or None)


def _with_fbank(cut: Cut, extractor: FeatureExtractor, storage: FeaturesWriter, archive: Path, source: Path) -> Cut:
    """Compute and store the cut's fbank; point its features at the archive's final name."""
    if not cut.has_recording:
        raise InputError(source, "cut has no recording to compute fbank from", cut_id=cut.id)
    try:
        cut = cut.compute_and_store_features(extractor, storage)
    except Exception as error:  # noqa: BLE001 - audio backends raise many kinds
        raise InputError(source, f"cannot compute fbank ({error})", cut_id=cut.id) from None
    return fastcopy(cut, features=fastcopy(cut.features, storage_path=str(archive)))


def _fbank_step(stack: ExitStack, archive: Path, source: Path) -> Callable[[Cut], Cut]:
    """Open the lilcom archive (under a temporary name until ``stack`` closes cleanly); return the per-cut step."""
    storage = stack.enter_context(LilcomChunkyWriter(stack.enter_context(atomic_output(archive))))
    extractor = Fbank(FbankConfig(num_mel_bins=FBANK_BINS))
    return lambda cut: _with_fbank(cut, extractor, storage, archive, source)


def _write_lhotse(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
    """Write the training cuts (and the fbank archive); both are renamed into place only on success."""
    with ExitStack() as stack:
        # entered first, renamed last: the cuts never point at an archive that is not in place yet
        writer = stack.enter_context(CutWriter(paths.primary))
        featurize = _fbank_step(stack, paths.features, source) if paths.features is not None else None
        for cut, label in items:
            out = training_cut(cut, label)
            writer.write(featurize(out) if featurize is not None else out)
    return 0


# --- audio files (NeMo and Kaldi read the file themselves) -----------------------------------------------------


def _is_segment(cut: Cut) -> bool:
    """True when the cut covers only part of its recording."""
    return cut.start > SEGMENT_TOLERANCE or cut.end < cut.recording.duration - SEGMENT_TOLERANCE


def _single_source(cut: Cut, source: Path, target: str, allowed: tuple[str, ...] = ("file",)) -> tuple[Recording, str]:
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


# --- NeMo -------------------------------------------------------------------------------------------------------


def nemo_entry(cut: Cut, label: Label, source: Path) -> dict[str, object]:
    """One NeMo manifest line; ``offset`` only when the cut is part of a longer recording."""
    recording, path = _single_source(cut, source, "NeMo")
    if recording.num_channels != 1:
        raise InputError(source, f"recording {recording.id} has {recording.num_channels} channels; "
                                 "NeMo manifests address whole files", cut_id=cut.id)
    entry: dict[str, object] = {"audio_filepath": path}
    if _is_segment(cut):
        entry["offset"] = round(cut.start, 6)
    entry["duration"] = round(cut.duration, 6)
    entry["text"] = label.text
    return entry


def _write_nemo(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
    """Write the NeMo JSON-lines manifest atomically."""
    with atomic_output(paths.primary) as tmp, open(tmp, "w", encoding="utf-8") as stream:
        for cut, label in items:
            stream.write(json.dumps(nemo_entry(cut, label, source), ensure_ascii=False) + "\n")
    return 0


# --- Kaldi ------------------------------------------------------------------------------------------------------


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
    recording, path = _single_source(cut, source, "Kaldi", allowed=("file", "command"))
    if recording.sources[0].type == "command" and recording.num_channels != 1:
        raise InputError(source, f"recording {recording.id} is a multi-channel command; Kaldi needs one channel",
                         cut_id=cut.id)
    utt = _kaldi_id(cut.id, "cut id", cut, source)
    speaker = _kaldi_id(_first_supervision_value(cut, "speaker") or utt, "speaker", cut, source)
    key = recording.id if recording.num_channels == 1 else f"{recording.id}-ch{cut.channel}"
    return KaldiUtterance(
        utt=utt, speaker=speaker, recording=_kaldi_id(key, "recording id", cut, source),
        wav=kaldi_wav(recording, cut.channel, path, recording.sources[0].type),
        start=cut.start, end=cut.end, segment=_is_segment(cut), text=label.text,
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


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _write_kaldi(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
    """Collect all utterances (sorting needs them all), then write the data dir atomically."""
    with atomic_directory(paths.primary) as tmp:
        utterances = [kaldi_utterance(cut, label, source) for cut, label in items]
        renamed = _order_utterances(utterances, source)
        tables = kaldi_tables(utterances)
        _check_recordings(tables["wav.scp"], source)
        for name, rows in tables.items():
            _write_table(tmp / name, rows)
    return renamed


# --- the stage --------------------------------------------------------------------------------------------------

# A writer consumes the kept cuts and returns how many utterance ids it had to rename (Kaldi only).
Writer = Callable[[Iterable[tuple[Cut, Label]], ExportPaths, Path], int]
WRITERS: dict[str, Writer] = {"lhotse": _write_lhotse, "nemo": _write_nemo, "kaldi": _write_kaldi}


@contextmanager
def _removed_if_left_empty(directory: Path) -> Iterator[None]:
    """On failure, remove ``directory`` again if this run created it and left it empty."""
    existed = directory.exists()
    try:
        yield
    except BaseException:
        if not existed and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        raise


def export_manifest(
    rescored: str | Path,
    out_dir: str | Path,
    config: ExportConfig = ExportConfig(),
    *,
    force: bool = False,
    progress: Progress = NullProgress(),
) -> ExportSummary:
    """Write the kept cuts of ``rescored`` to ``out_dir`` in ``config.format``; skip an unchanged rerun."""
    rescored, out_dir = Path(rescored), Path(out_dir)
    paths = export_paths(out_dir, config)
    check_readable(rescored)
    record = StageRecord.create("export", inputs=[rescored], params=asdict(config), outputs=paths.all)
    if not force and is_up_to_date(record, paths.primary):
        return ExportSummary(output=paths.primary, skipped=True, format=config.format, features=paths.features)
    started = time.perf_counter()
    tally = _Tally()
    progress.task(f"exporting {config.format}" + (" + fbank" if config.with_fbank else ""), None)
    with _removed_if_left_empty(out_dir):
        renamed = WRITERS[config.format](_kept_cuts(rescored, config, tally, progress), paths, rescored)
    write_meta(record, paths.primary)
    return ExportSummary(
        output=paths.primary,
        skipped=False,
        format=config.format,
        by_source={s: tally.by_source[s] for s in SOURCES if s in tally.by_source},
        dropped_by_reason=dict(tally.by_reason),
        features=paths.features,
        renamed_utterances=renamed,
        seconds=time.perf_counter() - started,
    )
