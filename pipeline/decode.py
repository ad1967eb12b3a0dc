"""``choral decode``: run the teacher over unannotated cuts, write n-best lists and embeddings.

Outputs in ``OUT_DIR``, all written atomically (temporary name, renamed when complete):

- ``decoded.jsonl.gz``: the input cuts with ``custom.nbest`` (``[{text, tokens, score}]``,
  best first, total log-probabilities), ``custom.embedding`` (lhotse ``Array``) and,
  with ``save_frames``, ``custom.frames`` (``TemporalArray`` of encoder frames, 40 ms shift) and, with
  ``measure_snr`` (the default) for a cut with a recording, ``custom.snr_db``: the energy-percentile SNR read from
  the audio (:mod:`.noise`), which propagate's ``noisy_pair_snr`` reads;
- ``embeddings.h5``: the arrays (lhotse numpy_hdf5 storage);
- ``failed.jsonl``: one ``{"id", "reason"}`` line per cut whose audio is missing,
  unreadable or empty, or which lasts less than ``min_duration`` or more than
  ``max_duration`` seconds (with ``on_error="fail"`` the first such cut is an
  InputError and nothing is written).

Cuts are decoded in batches of at most ``batch_duration`` seconds of audio, in
manifest order, so the output follows the input. With ``workers`` > 0, a torch
``DataLoader`` runs that many processes that load the audio and compute the
features of the next batches while the model decodes the current one (the model
never waits for audio when they keep up); see :func:`_with_features`.

``precision`` (:mod:`.teacher.precision`): ``auto`` on CUDA decodes the first batch
in float32 and float16 and keeps float16 for the run only if every cut's n-best is
the same; ``float16`` (which keys the sidecar) runs half throughout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import multiprocessing
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np
import torch.utils.data
from lhotse.array import TemporalArray
from lhotse.cut import Cut
from lhotse.features.io import NumpyHdf5Writer

from .config import check_finite
from .errors import ConfigError, InputError
from .manifest import (
    CutWriter,
    atomic_output,
    audio_paths,
    check_readable,
    iter_cuts,
    iter_json_lines,
    write_failures,
)
from .meta import StageRecord, files_digest, is_up_to_date, write_meta
from .noise import cut_snr_db
from .progress import NullProgress, Progress
from .teacher.contracts import AudioError, DecodeResult, Teacher
from .teacher.features import cut_features
from .teacher.precision import apply_precision, check_precision_spec, guard, guard_applies
from .teacher.registry import open_teacher, resolve_teacher, teacher_inputs

log = logging.getLogger(__name__)

# DecodeConfig fields that change how decode runs, not what it writes: they do not key the sidecar
_HOW = ("workers",)
FRAME_SHIFT = 0.04  # seconds between encoder frames: 10 ms features subsampled 4x


@dataclass(frozen=True)
class DecodeConfig:
    """Search and batching parameters (recorded in the meta sidecar)."""

    nbest: int = 8
    beam: int = 8
    search_temperature: float = 1.0  # >1 keeps more diverse hypotheses in the beam (scores stay exact)
    batch_duration: float = 60.0
    save_frames: bool = False
    on_error: Literal["skip", "fail"] = "skip"
    # Cuts outside [min_duration, max_duration] seconds are not decoded but listed in failed.jsonl: the teacher
    # labels a long recording with its first sentence, and a clip of a few ms with a letter, both confidently.
    min_duration: float = 0.3
    max_duration: float = 30.0
    # processes that load audio and compute features ahead of the model (0: in the decoding process)
    workers: int = 0
    # write each decoded cut's energy-percentile SNR (custom.snr_db, :mod:`.noise`): one more read of its audio
    measure_snr: bool = True

    def __post_init__(self) -> None:
        check_finite(self)
        if self.workers < 0:
            raise ConfigError("workers", f"must be 0 (load audio in the decoding process) or more, not {self.workers}")
        for name in ("nbest", "beam"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, not {getattr(self, name)}")
        if self.nbest > self.beam:
            raise ConfigError("nbest", f"{self.nbest} exceeds {{beam}} {self.beam}: the beam holds at most "
                                       f"{self.beam} hypotheses", related=("beam",))
        if self.search_temperature <= 0:
            raise ConfigError("search_temperature", f"must be positive, not {self.search_temperature}")
        if self.batch_duration <= 0:
            raise ConfigError("batch_duration", f"must be positive, not {self.batch_duration}")
        if self.on_error not in ("skip", "fail"):
            raise ConfigError("on_error", f"must be skip or fail, not {self.on_error!r}")
        if self.min_duration < 0:
            raise ConfigError("min_duration", f"must be non-negative, not {self.min_duration}")
        if self.max_duration <= self.min_duration:
            raise ConfigError("max_duration", f"{self.max_duration} must exceed {{min_duration}} "
                                              f"{self.min_duration}", related=("min_duration",))

    def refusal(self, duration: float) -> str | None:
        """Why a cut of ``duration`` seconds is not decoded (outside the duration limits), or None."""
        if not math.isfinite(duration):
            return f"its duration {duration} is not a finite number of seconds"
        if duration > self.max_duration:
            return (f"{duration:.4g} s is longer than max_duration {self.max_duration:g} s: segment long "
                    "recordings first (e.g. lhotse cut.cut_into_windows)")
        if duration < self.min_duration:
            return (f"{duration:.4g} s is shorter than min_duration {self.min_duration:g} s: too short to "
                    "hold a word")
        return None


@dataclass
class DecodeSummary:
    """What ``choral decode`` did (running totals while it works)."""

    output: Path
    skipped: bool = False
    n_decoded: int = 0
    n_failed: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    precision: str = "float32"  # what the teacher's network ran in (after auto's guard)

    @property
    def rtf(self) -> float:
        """Real-time factor: decoding seconds per second of audio (below 1 is faster than real time)."""
        return self.seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")


def output_paths(out_dir: str | Path) -> tuple[Path, Path, Path]:
    """``decoded.jsonl.gz``, ``embeddings.h5`` and ``failed.jsonl`` inside ``out_dir``."""
    out_dir = Path(out_dir)
    return out_dir / "decoded.jsonl.gz", out_dir / "embeddings.h5", out_dir / "failed.jsonl"


_ESCAPED = "sha256-"  # prefix of a hashed storage key


def storage_key(cut_id: str) -> str:
    """The HDF5 name of a cut's arrays: the id itself when HDF5 keeps it apart from every other id, else
    ``sha256-<hex digest of the id>``.

    HDF5 reads ``/`` as a path (``spk1`` and ``spk1/utt1`` collide, ``a/b`` and ``a//b`` are one name),
    ``.`` as the current group and a NUL byte as the end, so such ids (and ids that start with the prefix,
    which keeps the mapping one-to-one) are hashed; the manifest keeps the true id and points at the key."""
    if (not cut_id or "/" in cut_id or "\0" in cut_id or cut_id in (".", "..")
            or cut_id.startswith(_ESCAPED)):
        return _ESCAPED + hashlib.sha256(cut_id.encode("utf-8", "surrogatepass")).hexdigest()
    return cut_id


def _within_limits(cuts: Iterable[Cut], config: DecodeConfig, refused: dict[str, str]) -> Iterator[Cut]:
    """The cuts ``config``'s duration limits let through; the others go to ``refused`` with the reason."""
    for cut in cuts:
        reason = config.refusal(cut.duration)
        if reason is None:
            yield cut
        else:
            refused[cut.id] = reason


def _batches(cuts, seconds: float):
    """Consecutive groups of cuts holding at most ``seconds`` of audio (a longer cut goes alone)."""
    batch: list[Cut] = []
    total = 0.0
    for cut in cuts:
        if batch and total + cut.duration > seconds:
            yield batch
            batch, total = [], 0.0
        batch.append(cut)
        total += cut.duration
    if batch:
        yield batch


def _planned(cuts: Iterable[Cut], config: DecodeConfig) -> Iterator[tuple[dict[str, str], list[Cut]]]:
    """Batches of cuts to decode, each with the cuts refused (duration limits) since the previous one;
    a last ``(refused, [])`` carries the refusals after the last batch."""
    refused: dict[str, str] = {}
    for batch in _batches(_within_limits(cuts, config, refused), config.batch_duration):
        before = dict(refused)
        refused.clear()
        yield before, batch
    yield refused, []


def load_features(cuts: list[Cut], num_mel_bins: int, normalize: bool) -> tuple[list[np.ndarray | None], dict]:
    """Features of each cut (None for a cut whose audio is unusable) and the reasons of those (a loader task)."""
    features: list[np.ndarray | None] = []
    failures: dict[str, str] = {}
    for cut in cuts:
        try:
            features.append(cut_features(cut, num_mel_bins, normalize))
        except AudioError as error:
            features.append(None)
            failures.update(error.failures)
    return features, failures


def _one_thread(worker_id: int) -> None:
    """A loader worker computes one batch's features on one core: the model's process has the rest."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class _BatchFeatures(torch.utils.data.Dataset):
    """A dataset whose "indices" are the planned batches themselves: ``dataset[batch]`` is
    :func:`load_features` of the batch's cuts (in a loader worker)."""

    def __init__(self, num_mel_bins: int, normalize: bool) -> None:
        self.num_mel_bins, self.normalize = num_mel_bins, normalize

    def __getitem__(self, batch: list[Cut]) -> tuple[list[np.ndarray | None], dict]:
        return load_features(batch, self.num_mel_bins, self.normalize) if batch else ([], {})


def _as_is(item: Any) -> Any:
    """The loader's collate function: a loaded batch goes back as it is (no conversion to tensors)."""
    return item


def _with_features(planned: Iterator[tuple[dict[str, str], list[Cut]]], teacher: Teacher, workers: int
                   ) -> Iterator[tuple[dict[str, str], list[Cut], tuple[list, dict] | None]]:
    """``planned`` with each batch's features computed ahead by ``workers`` loader processes (in order), or None
    (the teacher loads its audio itself) without workers or for a teacher that does not say its features.

    The loader is a ``torch.utils.data.DataLoader`` whose sampler is the stream of planned batches (read
    lazily from the manifest here, in the decoding process) and whose dataset maps a batch to its features
    (``batch_size=None``: one item is one planned batch, returned as is). ``prefetch_factor`` 2 keeps
    ``2 x workers`` batches in flight, results come back in order, and the batches themselves stay here (a
    queue filled as the sampler hands them out), so only the features cross between processes. Workers are
    spawned, not forked: the decoding process already runs torch's OpenMP pool and may hold a CUDA context,
    neither of which survives a fork; their start-up (a fresh Python importing torch and lhotse) is paid once
    per stage, which iterates the loader once, so ``persistent_workers`` stays off. Each worker runs one
    thread (``worker_init_fn``).
    """
    options = getattr(teacher, "feature_options", None)
    if workers == 0 or options is None:
        for refused, batch in planned:
            yield refused, batch, None
        return
    mel, normalize = options()
    handed: deque = deque()

    def sampler() -> Iterator[list[Cut]]:
        for refused, batch in planned:
            handed.append((refused, batch))
            yield batch

    loader = torch.utils.data.DataLoader(
        _BatchFeatures(mel, normalize), batch_size=None, sampler=sampler(), collate_fn=_as_is,
        num_workers=workers, worker_init_fn=_one_thread, prefetch_factor=2, persistent_workers=False,
        multiprocessing_context=multiprocessing.get_context("spawn"))
    for loaded in loader:
        refused, batch = handed.popleft()
        yield refused, batch, loaded


def _decode_loaded(teacher: Teacher, batch: list[Cut], loaded: tuple[list, dict], failures: dict[str, str]
                   ) -> list[tuple[Cut, DecodeResult]]:
    """Decode a batch whose features a loader computed; cuts it could not load go to ``failures``."""
    features, failed = loaded
    failures.update(failed)
    kept = [(cut, f) for cut, f in zip(batch, features) if f is not None]
    if not kept:
        return []
    results = teacher.decode_features([f for _, f in kept])  # type: ignore[attr-defined]
    return [(cut, result) for (cut, _), result in zip(kept, results)]


def _decode_batch(teacher: Teacher, batch: list[Cut], failures: dict[str, str]) -> list[tuple[Cut, DecodeResult]]:
    """Decode ``batch``; cuts with unusable audio are moved to ``failures`` and the rest decoded again."""
    remaining = list(batch)
    while remaining:
        try:
            return list(zip(remaining, teacher.decode(remaining)))
        except AudioError as error:
            unknown = set(error.failures) - {cut.id for cut in remaining}
            if unknown or not error.failures:
                raise
            failures.update(error.failures)
            remaining = [cut for cut in remaining if cut.id not in error.failures]
    return []


def _snr_of(cut: Cut, cuts_path: Path) -> float:
    """The cut's ``custom.snr_db``; audio the teacher just read but this cannot is an InputError naming the cut."""
    try:
        return cut_snr_db(cut)
    except AudioError as error:
        raise InputError(cuts_path, f"cannot measure its SNR: {error.failures.get(cut.id, error)}",
                         cut_id=cut.id) from None


def decode_manifest(
    cuts_path: str | Path,
    out_dir: str | Path,
    teacher_path: str | Path,
    config: DecodeConfig = DecodeConfig(),
    *,
    teacher: Teacher | None = None,
    force: bool = False,
    progress: Progress = NullProgress(),
    on_batch: Callable[[DecodeSummary], None] | None = None,
    device: str = "cpu",
    precision: str = "auto",
) -> DecodeSummary:
    """Decode every cut of ``cuts_path`` with the teacher ``teacher_path`` (``default`` or a path some teacher
    backend reads: :mod:`.teacher.registry`) into ``out_dir``.

    ``teacher`` may pass an already loaded teacher (the teacher path still keys the
    meta sidecar); ``on_batch`` sees the running totals after every batch (for RTF display);
    ``device`` (``auto``, ``cpu``, ``cuda[:N]``) is where a teacher opened here runs. The device
    and the loader workers change how the work is done, not what it means, so neither keys the
    sidecar. ``precision`` (``auto``, ``float32``, ``float16``: :mod:`.teacher.precision`) applies
    to the teacher opened here or given; only ``float16`` keys the sidecar (``auto`` keeps half
    precision only where its probe's n-best are float32's).
    """
    check_precision_spec(precision)
    cuts_path = check_readable(cuts_path)
    teacher_path = resolve_teacher(teacher_path)
    decoded_path, h5_path, failed_path = output_paths(out_dir)
    # the audio files' sizes and mtimes count too: a fixed or replaced file is decoded again on the next run
    params = {**{k: v for k, v in asdict(config).items() if k not in _HOW},
              "audio_files": files_digest(audio_paths(cuts_path))}
    if precision == "float16":
        params["precision"] = precision
    record = StageRecord.create("decode", inputs=[cuts_path, *teacher_inputs(teacher_path)], params=params,
                                outputs=[decoded_path, h5_path, failed_path])
    summary = DecodeSummary(output=decoded_path)
    if not force and is_up_to_date(record, decoded_path):
        summary.skipped = True
        return summary
    if teacher is None:
        teacher = open_teacher(teacher_path, beam=config.beam, nbest=config.nbest,
                               search_temperature=config.search_temperature, device=device, precision=precision)
    elif precision != "auto":
        apply_precision(teacher, precision)
    probing = guard_applies(precision, teacher)  # auto on CUDA: the first decoded batch decides

    total = sum(1 for _ in iter_json_lines(cuts_path))
    progress.task("decoding utterances", total)
    failures: dict[str, str] = {}
    h5_final = str(h5_path.resolve())
    started = time.perf_counter()

    def store(arrays: NumpyHdf5Writer, key: str, value: np.ndarray, **temporal) -> object:
        # the writer sees the temporary file; the manifest must point at the final name
        stored = arrays.store_array(key, value, **temporal)
        if isinstance(stored, TemporalArray):
            return dataclasses.replace(stored, array=dataclasses.replace(stored.array, storage_path=h5_final))
        return dataclasses.replace(stored, storage_path=h5_final)

    with CutWriter(decoded_path) as writer, atomic_output(h5_path) as h5_tmp, NumpyHdf5Writer(h5_tmp) as arrays:
        refused: dict[str, str] = {}  # cuts outside the duration limits, in the order met
        planned = _with_features(_planned(iter_cuts(cuts_path), config), teacher, config.workers)
        outside: list[str] = []  # the reasons of all of them

        def take_refused() -> None:
            if refused and config.on_error == "fail":
                cut_id, reason = next(iter(refused.items()))
                raise InputError(cuts_path, reason, cut_id=cut_id)
            failures.update(refused)
            outside.extend(refused.values())
            summary.n_failed += len(refused)
            progress.advance(len(refused))
            refused.clear()

        for refused_before, batch, loaded in planned:
            refused.update(refused_before)
            take_refused()
            if not batch:
                continue
            before = set(failures)

            def run(batch: list[Cut] = batch, loaded: tuple[list, dict] | None = loaded
                    ) -> list[tuple[Cut, DecodeResult]]:
                return (_decode_batch(teacher, batch, failures) if loaded is None
                        else _decode_loaded(teacher, batch, loaded, failures))

            if probing:
                verdict, decoded = guard(teacher, run,  # type: ignore[arg-type]
                                         lambda done: {c.id: [h[0] for h in r.nbest] for c, r in done},
                                         f"decode's first batch, {len(batch)} cuts")
                probing = verdict.precision is None
            else:
                decoded = run()
            new_failures = [cut for cut in batch if cut.id in failures and cut.id not in before]
            if new_failures and config.on_error == "fail":
                first = new_failures[0]
                raise InputError(cuts_path, failures[first.id], cut_id=first.id)
            for cut, result in decoded:
                key = storage_key(cut.id)
                custom = dict(cut.custom or {})
                custom["nbest"] = [{"text": text, "tokens": list(tokens), "score": float(score)}
                                   for text, tokens, score in result.nbest]
                custom["embedding"] = store(arrays, "embedding/" + key, result.embedding.astype(np.float32))
                if config.save_frames:
                    custom["frames"] = store(arrays, "frames/" + key, result.frames.astype(np.float32),
                                             frame_shift=FRAME_SHIFT, temporal_dim=0, start=cut.start)
                if config.measure_snr and getattr(cut, "has_recording", False):  # (a teacher may read features)
                    custom["snr_db"] = _snr_of(cut, cuts_path)
                cut.custom = custom
                writer.write(cut)
                summary.audio_seconds += cut.duration
            summary.n_decoded += len(decoded)
            summary.n_failed += len(new_failures)
            summary.seconds = time.perf_counter() - started
            progress.advance(len(batch))
            if on_batch is not None:
                on_batch(summary)
        take_refused()
        if writer.count == 0:
            first_id, reason = next(iter(failures.items()))
            raise InputError(cuts_path, f"no cut could be decoded: all {len(failures)} failed, the first because "
                             f"{reason}", cut_id=first_id)
        write_failures(failed_path, failures)
    if outside:
        log.warning("decode: %d cut(s) outside %g-%g s were not decoded (listed in %s), e.g. %s", len(outside),
                    config.min_duration, config.max_duration, failed_path, outside[0])
    summary.seconds = time.perf_counter() - started
    summary.precision = getattr(teacher, "precision", "float32")
    write_meta(record, decoded_path)
    return summary
