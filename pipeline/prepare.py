"""``choral prepare``: turn the audio a team already has into a lhotse cut manifest.

Accepted inputs (exactly one):

- ``cuts``: a lhotse cut manifest; rewritten only to make relative audio paths
  absolute (against ``audio_root``) or to attach ``annotations``;
- ``audio_dir``: every audio file below a folder (cut id = relative path without
  its extension, ``/`` replaced by ``-``);
- ``kaldi_dir``: a Kaldi data directory (``wav.scp``, optional ``segments``,
  ``text``, ``utt2spk``); cut ids are the utterance ids, an utterance absent
  from ``text`` is unannotated;
- ``nemo_manifest``: a NeMo JSON-lines manifest (``audio_filepath``,
  ``duration``, optional ``offset`` and ``text``; relative paths are relative to
  the manifest's folder, as NeMo resolves them).

``annotations`` (a Kaldi ``text`` file, a lhotse supervision manifest or a lhotse
cut manifest, read by :mod:`.references`) gives reference transcripts for some
cuts: those cuts become the annotated seeds of propagation and teach the graph
threshold. Audio files whose header cannot be read are skipped and listed in
``failed.jsonl`` beside the output; decode later checks the samples themselves.

Long recordings: a cut longer than ``max_cut_duration`` seconds (no transcript of its own) is split
into utterance-sized pieces at pauses by the energy detector of :mod:`.segment`. Each piece is a lhotse
cut into the same recording at its own offset (so every export points into the original audio), with
the id ``<cut id>-<start ms>-<end ms>`` (milliseconds from the start of the long cut, eight digits, so
ids sort in time order and stay the same on every run). A cut shorter than ``min_cut_duration`` (too
short to hold a word) is skipped and listed in ``failed.jsonl``, as decode would refuse it.

The stage is skipped when its inputs are unchanged; for ``audio_dir`` the
fingerprint is a digest of the listing (names, sizes, mtimes), so new audio in
the folder makes a nightly run relabel; for the other inputs it includes the
same digest of the audio files they name, so a replaced file is read again.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from lhotse import Recording, SupervisionSegment
from lhotse.cut import Cut

from .config import check_finite
from .errors import ChoralError, ConfigError, InputError
from .fields import is_annotated
from .kaldi import read_table
from .manifest import CutWriter, audio_paths, check_readable, iter_cuts, iter_json_lines, write_failures
from .meta import StageRecord, files_digest, is_up_to_date, write_meta
from .progress import NullProgress, Progress
from .references import read_references
from .segment import SAMPLING_RATE, energies_of, speech_pieces

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".sph", ".m4a")


@dataclass(frozen=True)
class InputConfig:
    """Where the audio comes from (one of ``cuts``, ``audio_dir``, ``kaldi_dir``, ``nemo_manifest``)."""

    cuts: Path | None = None
    audio_dir: Path | None = None
    kaldi_dir: Path | None = None
    nemo_manifest: Path | None = None
    audio_root: Path | None = None
    annotations: Path | None = None
    sampling_rate: int = 16_000  # of command (``|``) entries of a Kaldi wav.scp (files: read from their header)
    # cuts longer than this (seconds) are split at pauses; shorter than min_cut_duration are skipped (failed.jsonl)
    max_cut_duration: float = 20.0
    min_cut_duration: float = 0.3
    min_pause: float = 0.3  # seconds of quiet that separate two utterances of a long recording

    def __post_init__(self) -> None:
        check_finite(self)
        if self.min_cut_duration < 0:
            raise ConfigError("min_cut_duration", f"must be non-negative, not {self.min_cut_duration}")
        if self.max_cut_duration <= max(self.min_cut_duration, 0.0) or self.max_cut_duration < 1.0:
            raise ConfigError("max_cut_duration", f"must be at least 1 s and exceed {{min_cut_duration}} "
                                                  f"{self.min_cut_duration}, not {self.max_cut_duration}",
                              related=("min_cut_duration",))
        if self.min_pause <= 0:
            raise ConfigError("min_pause", f"must be positive, not {self.min_pause}")
        given = [name for name in ("cuts", "audio_dir", "kaldi_dir", "nemo_manifest") if getattr(self, name)]
        if len(given) != 1:
            raise ChoralError("the input needs exactly one of cuts, audio_dir, kaldi_dir, nemo_manifest"
                              + (f" (got {', '.join(given)})" if given else ""))
        if self.audio_root is not None and not self.cuts:
            raise ChoralError("audio_root only applies to a cuts manifest (NeMo paths are relative to the "
                              "manifest's folder, audio_dir and Kaldi paths are used as they are)")

    @property
    def kind(self) -> str:
        return next(n for n in ("cuts", "audio_dir", "kaldi_dir", "nemo_manifest") if getattr(self, n))

    @property
    def source(self) -> Path:
        return Path(getattr(self, self.kind))

    @property
    def needs_prepare(self) -> bool:
        """A lhotse manifest with usable paths, no annotations and no cut longer than ``max_cut_duration``
        is decoded as it is (its durations are read to know: long cuts are split by prepare)."""
        if self.kind != "cuts" or self.audio_root is not None or self.annotations is not None:
            return True
        return any(isinstance(entry.get("duration"), (int, float)) and entry["duration"] > self.max_cut_duration
                   for _, entry in iter_json_lines(self.source))


@dataclass
class PrepareSummary:
    output: Path
    skipped: bool = False
    n_cuts: int = 0
    n_annotated: int = 0
    n_failed: int = 0
    n_split: int = 0  # long cuts split at pauses
    hours: float = 0.0
    seconds: float = 0.0


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ChoralError(f"{folder}: audio folder not found")
    files = [Path(root) / name for root, _, names in os.walk(folder) for name in names
             if name.lower().endswith(AUDIO_EXTENSIONS)]
    if not files:
        raise ChoralError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    return sorted(files)


def listing_digest(files: list[Path]) -> str:
    """A digest of names, sizes and mtimes: changes when a file is added, removed or rewritten."""
    return files_digest(files)


def referenced_audio(config: "InputConfig") -> list[Path]:
    """The audio files a ``cuts``, Kaldi or NeMo input names (Kaldi commands ending in ``|`` are not files):
    their sizes and mtimes join the stage's fingerprint, so a replaced file is read again on the next run."""
    source = config.source
    if config.kind == "cuts":
        return audio_paths(source, config.audio_root)
    if config.kind == "kaldi_dir":
        return [Path(spec).expanduser() for spec in read_table(source / "wav.scp").values() if not spec.endswith("|")]
    paths: dict[Path, None] = {}
    for _, entry in iter_json_lines(source, require_id=False):
        audio = entry.get("audio_filepath")
        if isinstance(audio, str) and audio:
            paths.setdefault(Path(audio) if os.path.isabs(audio) else source.parent / audio)
    return list(paths)


def audio_dir_cut_id(folder: Path, path: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix().replace("/", "-")


def _recording(path: Path, recording_id: str) -> Recording:
    """Recording of one audio file (raises ValueError with a short reason when its header is unreadable)."""
    try:
        return Recording.from_file(path, recording_id=recording_id)
    except Exception as error:  # audio backends raise many kinds
        text = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(text) from None


def _from_audio_dir(folder: Path, failures: dict[str, str]) -> Iterator[Cut]:
    seen: dict[str, Path] = {}
    for path in _audio_files(folder):
        cut_id = audio_dir_cut_id(folder, path)
        if cut_id in seen:
            raise ChoralError(f"{path}: same cut id {cut_id!r} as {seen[cut_id]}; rename one of them")
        seen[cut_id] = path
        try:
            recording = _recording(path.resolve(), cut_id)
        except ValueError as error:
            failures[cut_id] = f"{path}: cannot read audio header ({error})"
            continue
        yield recording.to_cut()


def _seconds(value: object, manifest: Path, key: str, line: int) -> float:
    """A NeMo offset or duration: JSON's ``NaN``, ``Infinity`` and ``1e400`` (read as inf) are refused, as
    they would give NaN cut durations and segments starting at ``nan``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(manifest, f"{key} must be a finite, non-negative number of seconds, not {value!r}",
                         line=line)
    return float(value)


def _segment(recording: Recording, cut_id: str, start: float, duration: float | None) -> Cut:
    """The cut of ``recording`` from ``start`` for ``duration`` seconds (None: to the end), clipped to the audio.

    Raises ValueError when nothing of the segment lies inside the audio.
    """
    end = recording.duration if duration is None else min(recording.duration, start + duration)
    if end - start < 1.0 / recording.sampling_rate:
        raise ValueError(f"segment {start:g}-{start + (duration or 0):g} s lies outside the "
                         f"{recording.duration:g} s of audio")
    cut = recording.to_cut()
    if start > 0 or end < recording.duration:
        cut = cut.truncate(offset=start, duration=end - start, preserve_id=True)
    cut.id = cut_id
    return cut


def _supervise(cut: Cut, text: str | None, speaker: str | None = None) -> Cut:
    """Give ``cut`` one whole-cut supervision when it has a transcript or a speaker (empty text: unannotated)."""
    text = text.strip() if isinstance(text, str) and text.strip() else None
    if text is not None or speaker is not None:
        cut.supervisions = [SupervisionSegment(id=cut.id, recording_id=cut.recording_id, start=0.0,
                                               duration=cut.duration, channel=cut.channel, text=text,
                                               speaker=speaker)]
    else:
        cut.supervisions = []
    return cut


def _from_nemo(manifest: Path, failures: dict[str, str]) -> Iterator[Cut]:
    for line, entry in iter_json_lines(manifest, require_id=False):
        audio = entry.get("audio_filepath")
        if not isinstance(audio, str) or not audio:
            raise InputError(manifest, "entry has no audio_filepath", line=line)
        path = Path(audio) if os.path.isabs(audio) else manifest.parent / audio
        offset = _seconds(entry.get("offset") or 0, manifest, "offset", line)
        duration = entry.get("duration")
        duration = None if duration is None else _seconds(duration, manifest, "duration", line)
        base_id = Path(audio).with_suffix("").as_posix().strip("/").replace("/", "-")
        cut_id = base_id if not offset else f"{base_id}-{int(round(offset * 100)):07d}"
        try:
            recording = _recording(path.resolve(), base_id)
        except ValueError as error:
            failures[cut_id] = f"{path}: cannot read audio header ({error})"
            continue
        try:
            cut = _segment(recording, cut_id, offset, duration)
        except ValueError as error:
            failures[cut_id] = f"{path}: {error}"
            continue
        text = entry.get("text")
        yield _supervise(cut, text if isinstance(text, str) else None)


def _kaldi_recording(spec: str, recording_id: str, sampling_rate: int) -> Recording:
    """A ``wav.scp`` entry: a file (its header gives rate and length) or a command ending in ``|``."""
    if not spec.endswith("|"):
        return _recording(Path(spec).expanduser().resolve(), recording_id)
    from lhotse import AudioSource
    from lhotse.kaldi import get_duration

    try:
        duration = get_duration(spec)
    except ValueError as error:  # kaldi_native_io missing
        raise ChoralError(str(error)) from None
    if duration is None:
        raise ValueError("the command produced no readable audio")
    return Recording(id=recording_id, sources=[AudioSource(type="command", channels=[0], source=spec[:-1].strip())],
                     sampling_rate=sampling_rate, num_samples=round(duration * sampling_rate), duration=duration)


def _from_kaldi(folder: Path, sampling_rate: int, failures: dict[str, str]) -> Iterator[Cut]:
    """Cuts of a Kaldi data directory: one per utterance (``segments`` line, else ``wav.scp`` line).

    Cut ids are the utterance ids, so ``text`` and annotation files match them; an utterance
    missing from ``text`` (or with an empty line there) is unannotated. Audio files are read
    for their real sampling rate; ``sampling_rate`` applies to command (``|``) entries only.
    """
    if not (folder / "wav.scp").is_file():
        raise ChoralError(f"{folder}: not a Kaldi data directory (no wav.scp)")
    wav_scp = read_table(folder / "wav.scp")
    texts = read_table(folder / "text", values=False) if (folder / "text").is_file() else {}
    speakers = read_table(folder / "utt2spk") if (folder / "utt2spk").is_file() else {}
    recordings: dict[str, Recording | None] = {}

    def recording_of(recording_id: str, utterance: str) -> Recording | None:
        if recording_id not in recordings:
            try:
                recordings[recording_id] = _kaldi_recording(wav_scp[recording_id], recording_id, sampling_rate)
            except ValueError as error:
                recordings[recording_id] = None
                failures[utterance] = f"{wav_scp[recording_id]}: cannot read audio header ({error})"
        elif recordings[recording_id] is None:
            failures[utterance] = f"{wav_scp[recording_id]}: cannot read audio header"
        return recordings[recording_id]

    if (folder / "segments").is_file():
        segments = folder / "segments"
        for utterance, rest in read_table(segments).items():
            fields = rest.split()
            try:
                recording_id, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                raise InputError(segments, f"expected '<utterance> <recording> <start> <end>' "
                                           f"for {utterance!r}") from None
            if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
                raise InputError(segments, f"start and end of {utterance!r} must be finite, start non-negative "
                                           f"(end -1: to the end of the recording), not {fields[1]} {fields[2]}")
            if recording_id not in wav_scp:
                raise InputError(segments, f"utterance {utterance!r} names recording {recording_id!r}, "
                                           "which wav.scp does not list")
            recording = recording_of(recording_id, utterance)
            if recording is None:
                continue
            try:
                cut = _segment(recording, utterance, start, None if end < 0 else end - start)
            except ValueError as error:
                failures[utterance] = f"{wav_scp[recording_id]}: {error}"
                continue
            yield _supervise(cut, texts.get(utterance), speakers.get(utterance))
        return
    for utterance in wav_scp:
        recording = recording_of(utterance, utterance)
        if recording is None:
            continue
        cut = recording.to_cut()
        cut.id = utterance
        yield _supervise(cut, texts.get(utterance), speakers.get(utterance))


def _from_cuts(manifest: Path, audio_root: Path | None) -> Iterator[Cut]:
    for cut in iter_cuts(manifest):
        if audio_root is not None and cut.has_recording:
            sources = cut.recording.sources
            if any(s.type == "file" and not os.path.isabs(s.source) for s in sources):
                cut = cut.with_recording_path_prefix(str(audio_root.resolve()))
        yield cut


def _annotate(cut: Cut, text: str) -> Cut:
    if cut.supervisions:
        cut.supervisions = [s for s in cut.supervisions][:1]
        cut.supervisions[0].text = text
    else:
        cut.supervisions = [SupervisionSegment(id=cut.id, recording_id=cut.recording_id, start=0.0,
                                               duration=cut.duration, channel=cut.channel, text=text)]
    return cut


def _mono_16k(cut: Cut, offset: float, duration: float) -> np.ndarray:
    """``duration`` seconds of ``cut`` from ``offset``, channels averaged, at 16 kHz."""
    part = cut.truncate(offset=offset, duration=duration, preserve_id=True)
    if part.sampling_rate != SAMPLING_RATE:
        part = part.resample(SAMPLING_RATE)
    audio = np.asarray(part.load_audio(), dtype=np.float32)
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def split_long_cut(cut: Cut, config: InputConfig) -> list[Cut]:
    """The utterance-sized pieces of ``cut`` (see :mod:`.segment`), each a cut into the same recording at
    its own offset, with id ``<cut id>-<start ms>-<end ms>``; an empty list when it holds no speech.

    Raises ValueError with a short reason when its audio cannot be read.
    """
    try:
        energies = energies_of(lambda offset, length: _mono_16k(cut, offset, length), cut.duration)
    except Exception as error:  # audio backends raise many kinds
        text = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot read audio ({text})") from None
    found = speech_pieces(energies, cut.duration, max_duration=config.max_cut_duration,
                          min_duration=config.min_cut_duration, min_pause=config.min_pause)
    speaker = next((s.speaker for s in cut.supervisions if s.speaker), None)
    pieces = []
    for found_piece in found:
        start_ms, end_ms = int(round(found_piece.start * 1000)), int(round(found_piece.end * 1000))
        piece = cut.truncate(offset=start_ms / 1000, duration=(end_ms - start_ms) / 1000, preserve_id=True)
        piece.id = f"{cut.id}-{start_ms:08d}-{end_ms:08d}"
        pieces.append(_supervise(piece, None, speaker))
    return pieces


def _sized(cut: Cut, config: InputConfig, failures: dict[str, str], summary: PrepareSummary) -> list[Cut]:
    """``cut`` as it is, its pieces when it is long and has no transcript, or nothing (a failure recorded)
    when it is too short to hold a word or a long recording without speech."""
    if cut.duration < config.min_cut_duration:
        failures[cut.id] = (f"{cut.duration:.4g} s is shorter than min_cut_duration {config.min_cut_duration:g} s: "
                            "too short to hold a word")
        return []
    if cut.duration <= config.max_cut_duration:
        return [cut]
    if is_annotated(cut):  # one transcript for the whole cut cannot be divided among pieces
        log.warning("%s: %.1f s with a transcript is kept whole (longer than max_cut_duration %g s)",
                    cut.id, cut.duration, config.max_cut_duration, extra={"stage": "prepare", "cut_id": cut.id})
        return [cut]
    try:
        pieces = split_long_cut(cut, config)
    except ValueError as error:
        failures[cut.id] = str(error)
        return []
    if not pieces:
        failures[cut.id] = f"{cut.duration:.4g} s of audio with no speech found"
        return []
    log.info("%s: %.1f s split at pauses into %d cuts", cut.id, cut.duration, len(pieces),
             extra={"stage": "prepare", "cut_id": cut.id})
    summary.n_split += 1
    return pieces


def prepare_input(config: InputConfig, output: str | Path, *, force: bool = False,
                  progress: Progress = NullProgress()) -> PrepareSummary:
    """Write the lhotse cut manifest ``output`` for ``config``'s input (and ``failed.jsonl`` beside it)."""
    output = Path(output)
    failed_path = output.with_name("failed.jsonl")
    source = config.source
    params: dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    if config.kind == "audio_dir":
        files = _audio_files(source)
        inputs: list[Path] = []
        params["listing"] = listing_digest(files)
    else:
        inputs = [check_readable(source / "wav.scp") if config.kind == "kaldi_dir" else check_readable(source)]
        if config.kind == "kaldi_dir":
            inputs += [source / n for n in ("segments", "text", "utt2spk") if (source / n).is_file()]
        params["audio"] = files_digest(referenced_audio(config))
    if config.annotations is not None:
        inputs.append(check_readable(config.annotations))
    record = StageRecord.create("prepare", inputs=inputs, params=params, outputs=[output, failed_path])
    summary = PrepareSummary(output=output)
    if not force and is_up_to_date(record, output):
        summary.skipped = True
        return summary
    started = time.perf_counter()
    annotations = ({cut_id: reference.text for cut_id, reference in read_references(config.annotations).items()}
                   if config.annotations is not None else {})
    failures: dict[str, str] = {}
    if config.kind == "audio_dir":
        cuts: Iterator[Cut] = _from_audio_dir(source, failures)
    elif config.kind == "nemo_manifest":
        cuts = _from_nemo(source, failures)
    elif config.kind == "kaldi_dir":
        cuts = _from_kaldi(source, config.sampling_rate, failures)
    else:
        cuts = _from_cuts(source, config.audio_root)
    progress.task("preparing cuts", None)
    used: set[str] = set()
    seen: set[str] = set()
    with CutWriter(output) as writer:
        for whole in cuts:
            if whole.id in seen:
                raise InputError(source, "duplicate cut id", cut_id=whole.id)
            seen.add(whole.id)
            if whole.id in annotations:
                whole = _annotate(whole, annotations[whole.id])
                used.add(whole.id)
            pieces = _sized(whole, config, failures, summary)
            for cut in pieces:
                if cut is not whole:
                    if cut.id in seen:
                        raise InputError(source, f"cut id of a piece of {whole.id!r} is also the id of another cut",
                                         cut_id=cut.id)
                    seen.add(cut.id)
                summary.n_annotated += is_annotated(cut)
                summary.hours += cut.duration / 3600
                writer.write(cut)
            progress.advance()
        if writer.count == 0:
            first = next(iter(failures.values()), "the input holds no cuts")
            raise InputError(source, f"no usable cut: {first}")
        unknown = sorted(set(annotations) - used - set(failures))  # unreadable cuts are in failed.jsonl
        if unknown:
            raise InputError(config.annotations or source, f"{len(unknown)} annotation(s) name no cut of the input, "
                                                           f"e.g. {unknown[0]!r}")
        write_failures(failed_path, failures)
        summary.n_cuts = writer.count
    summary.n_failed = len(failures)
    summary.seconds = time.perf_counter() - started
    write_meta(record, output)
    return summary
