"""``choral run CONFIG.yaml``: every stage, in order, into one run directory.

prepare -> decode -> group -> graph -> tune -> propagate -> export -> eval.

Each stage keeps its own ``.meta.json`` sidecar, so a stage whose inputs and
parameters are unchanged is skipped, and a second run with no new input does no
work. The run directory is locked for the run's duration (``RUN/.lock``, an
``flock``): an overlapping cron run stops at once with :class:`RunLocked`
instead of writing beside the first; under the lock, the temporary files of
runs that were killed (``.NAME.tmp.PID``, their process gone) are removed. Every output is written under a temporary
name and renamed, so a killed run leaves complete files or none; the next run
redoes from the first stage that was not finished.

Layout of ``RUN``::

    prepare/cuts.jsonl.gz  decode/decoded.jsonl.gz  decode/embeddings.h5
    grouped.jsonl.gz  graph.npz  threshold.json  params.yaml  params.json
    rescored.jsonl.gz  export/...  eval/report.{json,md,png}  run.json

With ``executor.kind: ray`` (``choral run --executor ray``) decode writes
``decode/shards/NNNNNN/`` and the index ``decode/decoded.shards.json`` that the
later stages read as one manifest, and group, graph, tune and propagate hand their
independent pieces to the cluster (:mod:`choral.pipeline.executor`).

The config and its checks: :mod:`choral.pipeline.run_config`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Literal

from ..kernels import threads
from .decode import decode_manifest, output_paths
from .errors import ChoralError
from .evaluate import evaluate_manifest
from .executor.config import ExecutorConfig
from .executor.rescoring import parallel_rescorer
from .export import export_manifest
from .graph import build_graph
from .group import group_manifest
from .manifest import SHARD_INDEX_SUFFIX, OutputError, make_folder, remove_orphans, write_error, write_json
from .prepare import prepare_input
from .progress import NullProgress, Progress
from .propagate import load_params, propagate_manifest
from .propagate.engine import rescore
from .run_config import EvalSection, RunConfig, load_run_config
from .teacher.registry import teacher_scorer
from .tune import TuneStageSummary, tune_stage

if TYPE_CHECKING:  # Ray is imported only for executor.kind ray
    from .executor.ray_backend import RayExecutor

SHARD_INDEX = "decoded" + SHARD_INDEX_SUFFIX  # the decoded manifest of a Ray decode (pipeline/executor/shards.py)

__all__ = ["STAGES", "EvalSection", "RunConfig", "RunLocked", "RunPaths", "RunSummary", "StageResult",
           "load_run_config", "run_lock", "run_pipeline"]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("prepare", "decode", "group", "graph", "tune", "propagate", "export", "eval")


class RunLocked(ChoralError):
    """Another ``choral run`` holds the run directory."""


@dataclass(frozen=True)
class RunPaths:
    """Where each stage writes inside the run directory."""

    root: Path
    sharded: bool = False  # decode wrote shards (Ray): the decoded manifest is their index

    @property
    def prepared(self) -> Path:
        return self.root / "prepare" / "cuts.jsonl.gz"

    @property
    def decoded(self) -> Path:
        if self.sharded:
            return self.root / "decode" / SHARD_INDEX
        return output_paths(self.root / "decode")[0]

    @property
    def grouped(self) -> Path:
        return self.root / "grouped.jsonl.gz"

    @property
    def graph(self) -> Path:
        return self.root / "graph.npz"

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def rescored(self) -> Path:
        return self.root / "rescored.jsonl.gz"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def summary(self) -> Path:
        return self.root / "run.json"


@dataclass
class StageResult:
    """One stage of a run: ran, skipped (up to date), off (not needed / not configured) or failed (its
    error line in ``detail``; the stages after it are absent)."""

    stage: str
    status: Literal["ran", "skipped", "off", "failed"]
    seconds: float = 0.0
    detail: str = ""
    peak_rss_mib: float = 0.0


@dataclass
class RunSummary:
    run_dir: Path
    stages: list[StageResult] = field(default_factory=list)
    report: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str | None = None  # the error line of a failed run

    @property
    def status(self) -> Literal["ok", "failed"]:
        return "failed" if self.error is not None else "ok"

    @property
    def ran(self) -> list[str]:
        return [s.stage for s in self.stages if s.status == "ran"]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` exclusively (released when the process ends, even if killed).

    The lock file is opened without following a symlink and without truncating (``O_NOFOLLOW``,
    ``O_CREAT``): in a shared writable folder a ``.lock`` symlink must not let a run empty the file it
    points at. A run directory that cannot be made or locked is an OutputError naming it."""
    make_folder(run_dir, "run directory")
    lock = run_dir / ".lock"
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OutputError(f"{lock}: is a symbolic link; remove it (choral never follows one)") from None
        raise write_error(lock, error, "cannot create the lock file") from None
    with os.fdopen(descriptor, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{run_dir}: another choral run is using this run directory (.lock is held)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_pipeline(
    config: RunConfig,
    *,
    until: str = "eval",
    force: bool = False,
    force_stages: Collection[str] = (),
    progress: Progress = NullProgress(),
    on_stage: Callable[[StageResult], None] | None = None,
) -> RunSummary:
    """Run the stages of ``config`` up to ``until`` (inclusive), skipping those that are up to date;
    ``force`` redoes every stage, ``force_stages`` the stages named (the later ones then rerun only if
    their inputs changed)."""
    for stage in (until, *force_stages):
        if stage not in STAGES:
            raise ChoralError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    paths = RunPaths(Path(config.run_dir), sharded=config.executor.kind == "ray")
    summary = RunSummary(run_dir=paths.root)
    started = time.perf_counter()
    last = STAGES.index(until)
    if config.threads is not None and threads.chosen() is None:  # `choral --threads` wins over the config
        threads.set_budget(config.threads)

    stage_started = [started]

    def record(stage: str, status: str, seconds: float = 0.0, detail: str = "") -> None:
        result = StageResult(stage, status, seconds, detail, peak_rss_mib())  # type: ignore[arg-type]
        summary.stages.append(result)
        stage_started[0] = time.perf_counter()
        if on_stage is not None:
            on_stage(result)

    def wanted(stage: str) -> bool:
        return STAGES.index(stage) <= last

    with run_lock(paths.root):
        for leftover in remove_orphans(paths.root):
            log.info("removed %s, left by a run that was killed", leftover)
        executor = _open_executor(config.executor)
        try:
            return _run_stages(config, paths, summary, started, record, wanted,
                               lambda stage: force or stage in force_stages, progress, executor)
        except BaseException as error:
            # run.json must not keep saying the previous run succeeded: record the stage that failed
            failed = STAGES[len(summary.stages)] if len(summary.stages) < len(STAGES) else STAGES[-1]
            summary.error = _error_line(error)
            record(failed, "failed", time.perf_counter() - stage_started[0], summary.error)
            try:
                _finish(summary, paths, started)
            except OutputError as unwritable:  # a full disk fails both: the stage's own error says more
                log.warning("%s", unwritable)
            raise
        finally:
            if executor is not None:
                executor.close()


def _open_executor(config: ExecutorConfig) -> RayExecutor | None:
    """The Ray executor of ``executor.kind: ray`` (Ray itself starts on first use), None for local: a local
    run never imports Ray."""
    if config.kind == "local":
        return None
    try:
        from .executor.ray_backend import RayExecutor
    except ImportError as error:
        raise ChoralError(f"executor.kind ray needs Ray: pip install 'choral[ray]' ({error})") from None
    return RayExecutor(config)


def _error_line(error: BaseException) -> str:
    """The one line a failed run records: the error's message (its first line), or what happened."""
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C, or SIGTERM as the CLI raises it ("terminated (SIGTERM)")
        return str(error) or "interrupted"
    if isinstance(error, SystemExit):
        return f"exited with status {error.code}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _run_stages(
    config: RunConfig,
    paths: RunPaths,
    summary: RunSummary,
    started: float,
    record: Callable[..., None],
    wanted: Callable[[str], bool],
    forced: Callable[[str], bool],
    progress: Progress,
    executor: RayExecutor | None = None,
) -> RunSummary:
    """The stages of :func:`run_pipeline`, in order, under its lock; ``record`` is called after each,
    ``forced(stage)`` says whether a stage is redone even when up to date."""
    normalizer = config.normalizer
    # prepare
    cuts = config.input.source
    if config.input.needs_prepare:
        prepared = prepare_input(config.input, paths.prepared, force=forced("prepare"), progress=progress)
        cuts = paths.prepared
        record("prepare", "skipped" if prepared.skipped else "ran", prepared.seconds,
               "" if prepared.skipped else f"{prepared.n_cuts:,} cuts ({prepared.hours:.2f} h), "
               f"{prepared.n_annotated:,} annotated, {prepared.n_split:,} long recordings split, "
               f"{prepared.n_failed:,} skipped (failed.jsonl)")
    else:
        record("prepare", "off", detail="input is a lhotse manifest")
    if not wanted("decode"):
        return _finish(summary, paths, started)

    if executor is None:
        decoded = decode_manifest(cuts, paths.root / "decode", config.teacher, config.decode,
                                  force=forced("decode"), progress=progress, device=config.device,
                                  precision=config.precision)
    else:
        from .executor.ray_decode import decode_on_ray
        decoded = decode_on_ray(cuts, paths.root / "decode", config.teacher, config.decode, executor,
                                force=forced("decode"), progress=progress, device=config.device,
                                precision=config.precision)
    record("decode", "skipped" if decoded.skipped else "ran", decoded.seconds,
           "" if decoded.skipped else f"{decoded.n_decoded:,} cuts, {decoded.n_failed:,} failed, "
           f"RTF {decoded.rtf:.3f}")
    if not wanted("group"):
        return _finish(summary, paths, started)

    grouped = group_manifest(paths.decoded, paths.grouped, config.group, normalizer, force=forced("group"),
                             progress=progress, executor=executor)
    record("group", "skipped" if grouped.skipped else "ran", grouped.seconds,
           "" if grouped.skipped else f"{grouped.n_groups:,} groups + {grouped.n_singletons:,} singletons, "
           f"{grouped.n_by_sound:,} formed by sound, largest {grouped.largest}")
    if not wanted("graph"):
        return _finish(summary, paths, started)

    graph = build_graph(paths.grouped, paths.graph, None, config.graph, normalizer, force=forced("graph"),
                        progress=progress, executor=executor)
    fit = graph.fit
    record("graph", "skipped" if graph.skipped else "ran", graph.seconds,
           "" if graph.skipped else f"{graph.n_edges:,} edges over {graph.n_pairs:,} pairs"
           + (f", threshold {fit.threshold:.3g} ({fit.rule})" if fit is not None else ""))
    if not wanted("tune"):
        return _finish(summary, paths, started)

    propagate_config = config.propagate
    # one lazily loaded teacher scorer serves tune and propagate (its scores are memoised)
    scorer = (teacher_scorer(paths.grouped, config.teacher, device=config.device, precision=config.precision)
              if config.scorer else None)
    if config.tune_enabled:
        tuned = tune_stage(paths.grouped, paths.graph, paths.params, base=config.propagate, grid=config.tune,
                           normalizer=normalizer, force=forced("tune"), progress=progress,
                           scorer=scorer if config.propagate.share_candidates else None, executor=executor)
        record("tune", *_tune_status(tuned))
        propagate_config = load_params(paths.params, base=config.propagate)
    else:
        record("tune", "off", detail="tune.enabled is false")
    if not wanted("propagate"):
        return _finish(summary, paths, started)

    propagated = propagate_manifest(paths.grouped, paths.graph, paths.rescored, propagate_config, normalizer,
                                    scorer=scorer if propagate_config.share_candidates else None,
                                    force=forced("propagate"), progress=progress,
                                    rescorer=rescore if executor is None else parallel_rescorer(executor))
    record("propagate", "skipped" if propagated.skipped else "ran", propagated.seconds,
           "" if propagated.skipped else f"{propagated.changed:,} transcripts changed, "
           f"{propagated.shared:,} from neighbours ({propagated.retrieved:,} from the nearest annotated reading)")
    if not wanted("export"):
        return _finish(summary, paths, started)

    exported = export_manifest(paths.rescored, paths.export, config.export, force=forced("export"),
                               progress=progress)
    record("export", "skipped" if exported.skipped else "ran", exported.seconds,
           "" if exported.skipped else f"{config.export.format}: {exported.n_kept:,} cuts kept "
           f"({exported.hours_kept:.2f} h), {exported.n_dropped:,} dropped")
    if not wanted("eval"):
        return _finish(summary, paths, started)

    if config.eval.references is None:
        record("eval", "off", detail="no eval.references")
    else:
        evaluated = evaluate_manifest(paths.rescored, config.eval.references, paths.eval, config.eval.by,
                                      normalizer, config.eval.allow_missing, force=forced("eval"),
                                      progress=progress)
        summary.report = evaluated.report
        overall = evaluated.report["unannotated"]
        record("eval", "skipped" if evaluated.skipped else "ran", evaluated.seconds,
               f"unannotated WER teacher {100 * overall['teacher']['wer']:.2f}% -> choral "
               f"{100 * overall['choral']['wer']:.2f}% (oracle {100 * overall['oracle']['wer']:.2f}%)")
    return _finish(summary, paths, started)


def _tune_status(tuned: TuneStageSummary) -> tuple[str, float, str]:
    """The run's status, seconds and detail line of the tune stage."""
    if tuned.skipped:
        return "skipped", 0.0, ""
    if tuned.tuned is None:  # too few annotated cuts: params.yaml holds the config's values
        return "off", 0.0, f"{tuned.n_annotated} annotated cut(s): not tuned, using the config's propagate values"
    best = tuned.tuned.best
    return "ran", tuned.seconds, (f"held-out WER {100 * tuned.tuned.teacher_wer:.2f}% -> "
                                  f"{100 * tuned.tuned.best_wer:.2f}%; alpha {best.alpha}, lambda "
                                  f"{best.fusion_weight}, T {best.temperature}, threshold x{best.threshold_scale:g}")


def _finish(summary: RunSummary, paths: RunPaths, started: float) -> RunSummary:
    summary.seconds = time.perf_counter() - started
    write_json({  # atomic: a killed run leaves the previous run.json or this one, never half of one
        "run_dir": str(paths.root),
        "status": summary.status,
        **({"error": summary.error} if summary.error is not None else {}),
        "seconds": summary.seconds,
        "peak_rss_mib": peak_rss_mib(),
        "stages": [asdict(s) for s in summary.stages],
    }, paths.summary)
    return summary
