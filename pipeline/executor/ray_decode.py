"""Decode on Ray Data: the cut manifest as shards, a pool of teacher actors, one atomic output per shard.

The driver cuts the manifest into shards (:mod:`.shards`) and makes a Ray dataset of them, one row per
shard; ``map_batches`` runs :class:`ShardDecoder`, an actor class that opens the teacher once, on an actor
pool of ``decode_actors`` actors (``gpus_per_actor`` GPUs each on a GPU cluster, else ``cpus_per_actor``
CPUs). Each shard is decoded by :func:`choral.pipeline.decode.decode_manifest` into its own folder, so it
is written atomically and keeps the decode stage's sidecar: a shard already decoded with the same cuts,
teacher and parameters is skipped, and a rerun after a crash (a killed driver, a lost node) decodes only
the shards without complete output. Ray Data restarts a killed actor and retries its shard; the retry
rewrites the same files under the same names, so each cut is decoded into exactly one shard.

When every shard is done the driver writes ``failed.jsonl`` (the shards' failures in order), the index
``decoded.shards.json`` and the stage's sidecar: up to date, the whole stage is skipped as the local
decode is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray

from ..decode import DecodeConfig, DecodeSummary, decode_manifest, output_paths
from ..manifest import audio_paths, check_readable, iter_json_lines, remove_orphans, write_failures
from ..meta import StageRecord, files_digest, is_up_to_date, write_meta
from ..progress import NullProgress, Progress
from ..teacher.contracts import Teacher
from ..teacher.device import check_device_spec
from ..teacher.precision import check_precision_spec
from ..teacher.registry import open_teacher, resolve_teacher, teacher_inputs
from .config import ExecutorConfig
from .faults import pause_point
from .ray_backend import RayExecutor, unwrap
from .shards import INDEX_NAME, write_index, write_shard_inputs

log = logging.getLogger(__name__)


class _LazyTeacher:
    """The teacher, opened on first use: an actor whose shards are all up to date loads no model. It opens on
    the actor's ``device`` (``auto`` picks the GPU Ray gave the actor, if any) in ``precision``."""

    def __init__(self, path: Path, config: DecodeConfig, device: str = "cpu", precision: str = "auto") -> None:
        self._path, self._config, self._device, self._precision = path, config, device, precision
        self._teacher: Teacher | None = None

    def _open(self) -> Teacher:
        if self._teacher is None:
            config = self._config
            self._teacher = open_teacher(self._path, beam=config.beam, nbest=config.nbest,
                                         search_temperature=config.search_temperature, device=self._device,
                                         precision=self._precision)
        return self._teacher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._open(), name)


class ShardDecoder:
    """A Ray Data actor: decodes each shard of its batches with one teacher."""

    def __init__(self, teacher_path: str, config: DecodeConfig, force: bool, device: str = "cpu",
                 precision: str = "auto") -> None:
        lazy = _LazyTeacher(Path(teacher_path), config, device, precision)
        # the precision rules (the float16 copy, auto's guard on CUDA) act on the teacher itself, not on a proxy:
        # off the default CPU / auto settings the actor opens it at once
        self.teacher: Any = lazy if (device, precision) == ("cpu", "auto") else lazy._open()
        self.teacher_path, self.config, self.force, self.precision = Path(teacher_path), config, force, precision

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {key: [] for key in ("shard", "skipped", "n_decoded", "n_failed", "audio_seconds",
                                                   "seconds")}
        for shard, cuts in zip(batch["shard"], batch["cuts"]):
            folder = Path(str(cuts)).parent
            remove_orphans(folder)  # a killed actor's temporary files (its process is gone)
            pause_point("decode")
            summary = decode_manifest(Path(str(cuts)), folder, self.teacher_path, self.config,
                                      teacher=self.teacher, force=self.force,
                                      precision=self.precision)
            out["shard"].append(int(shard))
            out["skipped"].append(summary.skipped)
            out["n_decoded"].append(summary.n_decoded)
            out["n_failed"].append(summary.n_failed)
            out["audio_seconds"].append(summary.audio_seconds)
            out["seconds"].append(summary.seconds)
        return out


def quiet_ray_data() -> None:
    """No progress bars or per-operator log lines from Ray Data: the run prints its own stage lines."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def decode_on_ray(
    cuts_path: str | Path,
    out_dir: str | Path,
    teacher_path: str | Path,
    config: DecodeConfig,
    executor: RayExecutor,
    *,
    force: bool = False,
    progress: Progress = NullProgress(),
    device: str = "cpu",
    precision: str = "auto",
) -> DecodeSummary:
    """Decode ``cuts_path`` on the Ray cluster into ``out_dir`` (shards + ``decoded.shards.json``).

    Each actor opens the teacher on ``device`` in ``precision``, as ``decode_manifest`` does locally (give
    the actors GPUs with ``executor.gpus_per_actor``); ``float16`` keys the sidecars, as it does there."""
    check_precision_spec(precision)
    check_device_spec(device)
    cuts_path, teacher_path, out_dir = check_readable(cuts_path), resolve_teacher(teacher_path), Path(out_dir)
    settings: ExecutorConfig = executor.config
    index = out_dir / INDEX_NAME
    failed_path = output_paths(out_dir)[2]
    params = {**asdict(config), "audio_files": files_digest(audio_paths(cuts_path)),
              "shard_cuts": settings.shard_cuts}
    if precision == "float16":
        params["precision"] = precision
    record = StageRecord.create("decode", inputs=[cuts_path, *teacher_inputs(teacher_path)], params=params,
                                outputs=[index, failed_path])
    summary = DecodeSummary(output=index)
    if not force and is_up_to_date(record, index):
        summary.skipped = True
        return summary
    started = time.perf_counter()
    executor.connect()
    quiet_ray_data()
    shard_inputs = write_shard_inputs(cuts_path, out_dir, settings.shard_cuts, config)
    progress.task(f"decoding {len(shard_inputs)} shards on Ray", len(shard_inputs))
    rows = [{"shard": i, "cuts": str(path)} for i, path in enumerate(shard_inputs)]
    actors = min(settings.decode_actors, len(rows))
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    decoded = dataset.map_batches(
        ShardDecoder, fn_constructor_args=(str(teacher_path), config, force, device, precision), batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=settings.cpus_per_actor, num_gpus=settings.gpus_per_actor or None)
    results = []
    try:
        for row in decoded.iter_rows():
            results.append(row)
            progress.advance()
    except ray.exceptions.RayTaskError as error:
        raise unwrap(error) from None
    results.sort(key=lambda row: row["shard"])
    if [int(row["shard"]) for row in results] != list(range(len(rows))):
        raise RuntimeError(f"Ray returned shards {[row['shard'] for row in results]} for {len(rows)} shards")
    decoded_paths = [output_paths(path.parent)[0] for path in shard_inputs]
    failures: dict[str, str] = {}
    for path in shard_inputs:
        shard_failed = output_paths(path.parent)[2]
        if shard_failed.stat().st_size:
            failures.update((str(line["id"]), str(line.get("reason", ""))) for _, line in iter_json_lines(shard_failed))
    write_failures(failed_path, failures)
    write_index(out_dir, decoded_paths)
    write_meta(record, index)
    ran = [row for row in results if not row["skipped"]]
    summary.n_decoded = sum(int(row["n_decoded"]) for row in ran)
    summary.n_failed = sum(int(row["n_failed"]) for row in ran)
    summary.audio_seconds = sum(float(row["audio_seconds"]) for row in ran)
    summary.seconds = time.perf_counter() - started
    log.info("decode on Ray: %d shards, %d decoded now, %d up to date", len(rows), len(ran), len(rows) - len(ran))
    return summary
