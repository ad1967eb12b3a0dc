"""The export stage: one streaming pass from ``rescored.jsonl.gz`` to the student's training manifests.

Every cut's label (``custom.choral``; annotated cuts keep their reference) is
checked, filtered by confidence, and handed to the writer of the registered
format that ``ExportConfig.format`` names. Every output appears under its real
name only when complete, and a ``.meta.json`` sidecar lets an unchanged rerun be
skipped.

The files of an earlier export of the same ``prefix`` and ``split`` in another format (or with
``with_fbank`` then, not now) are removed once the new export is complete: exactly the outputs its
sidecar lists, then that sidecar, so ``export/`` never holds two formats' manifests of one run.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from lhotse.cut import Cut, MonoCut, MultiCut

from ..config import CHOICES
from ..errors import ChoralError, ConfigError, InputError
from ..manifest import check_readable, iter_cut_dicts, iter_cuts, write_error
from ..meta import StageRecord, is_up_to_date, meta_path, write_meta
from ..progress import NullProgress, Progress
from .pseudo_labels import SOURCES, Label, drop_reason, pseudo_label
from .registry import ExportPaths, export_format_names, get_export_format

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[^\s/\\.][^\s/\\]*$")


@dataclass(frozen=True)
class ExportConfig:
    """What to write and which cuts to keep; ``format`` is a registered format's name."""

    format: str = field(default="lhotse", metadata={CHOICES: export_format_names})
    prefix: str = "choral"
    split: str = "train"
    min_confidence: float | None = None
    max_wer_estimate: float | None = None
    with_fbank: bool = False

    def __post_init__(self) -> None:
        export_format = get_export_format(self.format)
        for name, value in (("prefix", self.prefix), ("split", self.split)):
            if not _SAFE_NAME.match(value):
                raise ConfigError(name, f"{value!r} must be a non-empty file-name part without spaces or slashes")
        for name, bound in (("min_confidence", self.min_confidence), ("max_wer_estimate", self.max_wer_estimate)):
            if bound is not None and not 0.0 <= bound <= 1.0:
                raise ConfigError(name, f"must lie between 0 and 1, not {bound}")
        if self.with_fbank and export_format.features is None:
            raise ConfigError("with_fbank",
                              "only applies to {format} lhotse; NeMo and Kaldi compute their own features",
                              related=("format",))


def export_paths(out_dir: str | Path, config: ExportConfig) -> ExportPaths:
    """What ``config``'s format writes: the names recipes expect (icefall's ``<prefix>_cuts_<split>.jsonl.gz``...)."""
    return get_export_format(config.format).paths(Path(out_dir), config.prefix, config.split,
                                                  with_fbank=config.with_fbank)


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


SINGLE_RECORDING_CUTS: tuple[str, ...] = ("MonoCut", "MultiCut")  # the cut types export takes


def _cut_dicts(rescored: Path) -> Iterator[dict]:
    """The cuts of ``rescored`` as JSON objects, checked to be cuts of one recording with a duration (what the
    lhotse writer reads from them; the rest passes through as it is)."""
    for data in iter_cut_dicts(rescored):
        kind = data.get("type")
        if kind not in SINGLE_RECORDING_CUTS:
            found = kind or "line without a type"
            raise InputError(rescored, f"export needs cuts of a single recording, found a {found}",
                             cut_id=str(data["id"]))
        duration = data.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not isinstance(
                data.get("supervisions", []), list):
            raise InputError(rescored, "not a lhotse cut (needs a numeric duration and a list of supervisions)",
                             cut_id=str(data["id"]))
        yield data


def _cut_objects(rescored: Path) -> Iterator[Cut]:
    """The cuts of ``rescored`` as lhotse cuts, checked to be cuts of one recording."""
    for cut in iter_cuts(rescored):
        if not isinstance(cut, (MonoCut, MultiCut)):
            raise InputError(rescored, f"export needs cuts of a single recording, found a {type(cut).__name__}",
                             cut_id=cut.id)
        yield cut


def _kept_cuts(rescored: Path, config: ExportConfig, tally: _Tally, progress: Progress,
               raw: bool = False) -> Iterator[tuple[Any, Label]]:
    """Stream the cuts that pass the filters with their labels (as JSON dicts with ``raw``, else lhotse cuts);
    fail if none does."""
    cuts: Iterator[Any] = _cut_dicts(rescored) if raw else _cut_objects(rescored)
    for cut in cuts:
        label = pseudo_label(cut, rescored)
        reason = drop_reason(label, min_confidence=config.min_confidence, max_wer_estimate=config.max_wer_estimate)
        tally.count(label, float(cut["duration"]) if raw else cut.duration, reason)
        progress.advance()
        if reason is None:
            yield cut, label
    if tally.n_kept == 0:
        raise ChoralError(f"{rescored}: every cut was dropped by the filters "
                          f"({', '.join(sorted(tally.by_reason))}); nothing to export")


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


def _earlier_exports(out_dir: Path, record: StageRecord, primary: Path) -> Iterator[tuple[Path, list[Path]]]:
    """Sidecars in ``out_dir`` of earlier exports of the same prefix and split, each with the outputs it lists
    that the export of ``record`` does not write (by name, inside ``out_dir`` only, so a moved run dir is
    handled and nothing outside the folder is touched)."""
    current = {Path(o).name for o in record.outputs}
    ours = meta_path(primary).name
    if not out_dir.is_dir():
        return
    for sidecar in sorted(out_dir.glob("*.meta.json")):
        try:
            stored = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(stored, dict) or stored.get("stage") != "export":
            continue
        params = stored.get("params")
        params = params if isinstance(params, dict) else {}
        if (params.get("prefix"), params.get("split")) != (record.params["prefix"], record.params["split"]):
            continue  # another split (train, dev) written into the same folder stays
        outputs = stored.get("outputs")
        outputs = outputs if isinstance(outputs, list) else []
        names = {Path(o).name for o in outputs if isinstance(o, str) and Path(o).name}
        stale = [out_dir / name for name in sorted(names - current)]
        if sidecar.name != ours or stale:
            yield sidecar, stale


def _remove_earlier_exports(earlier: list[tuple[Path, list[Path]]], primary: Path) -> None:
    """Remove what earlier exports of this prefix and split wrote and this one does not (see the module's
    docstring): outputs first, their sidecars last, so a kill in between leaves a sidecar the next run
    finishes with. The sidecar of ``primary`` itself is left for :func:`write_meta` to replace."""
    try:
        for sidecar, stale in earlier:
            for path in stale:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
                else:
                    continue
                log.info("export: removed %s of an earlier export (%s)", path, sidecar.name,
                         extra={"stage": "export", "path": str(path)})
        for sidecar, _ in earlier:
            if sidecar.name != meta_path(primary).name:
                sidecar.unlink(missing_ok=True)
    except OSError as error:
        raise write_error(Path(error.filename or primary.parent), error, "cannot remove") from None


def export_manifest(
    rescored: str | Path,
    out_dir: str | Path,
    config: ExportConfig | None = None,
    *,
    force: bool = False,
    progress: Progress = NullProgress(),
) -> ExportSummary:
    """Write the kept cuts of ``rescored`` to ``out_dir`` in ``config.format`` (default: lhotse); skip an unchanged
    rerun."""
    config = ExportConfig() if config is None else config
    rescored, out_dir = Path(rescored), Path(out_dir)
    paths = export_paths(out_dir, config)
    check_readable(rescored)
    record = StageRecord.create("export", inputs=[rescored], params=asdict(config), outputs=paths.all)
    if not force and is_up_to_date(record, paths.primary):
        _remove_earlier_exports(list(_earlier_exports(out_dir, record, paths.primary)), paths.primary)
        return ExportSummary(output=paths.primary, skipped=True, format=config.format, features=paths.features)
    started = time.perf_counter()
    # the sidecar at our own name may list files (features) this export no longer writes: read it now
    earlier = list(_earlier_exports(out_dir, record, paths.primary))
    tally = _Tally()
    progress.task(f"exporting {config.format}" + (" + fbank" if config.with_fbank else ""), None)
    export_format = get_export_format(config.format)
    with _removed_if_left_empty(out_dir):
        renamed = export_format.writer(_kept_cuts(rescored, config, tally, progress, export_format.raw), paths,
                                       rescored)
    _remove_earlier_exports(earlier, paths.primary)
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
