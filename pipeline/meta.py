"""``<output>.meta.json`` sidecars: what a stage read, with which parameters, by which choral.

A stage is up to date when every output exists and its sidecar records the same
stage, parameters, choral version, and input fingerprints (size and mtime) as the
run about to start; then the stage is skipped and says so. The sidecar is written
last, after the outputs were renamed into place, so a killed run never looks
up to date.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .manifest import write_json

log = logging.getLogger(__name__)


def choral_version() -> str:
    """The installed choral version (``unknown`` when run from a bare source tree)."""
    try:
        return metadata.version("choral")
    except metadata.PackageNotFoundError:
        return "unknown"


def fingerprint(path: str | Path) -> dict[str, int]:
    """Size and modification time of a file: cheap, and changes whenever it is rewritten."""
    stat = Path(path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def files_digest(paths: Iterable[str | Path]) -> str:
    """A digest of the names, sizes and mtimes of ``paths`` (a missing file counts as missing): it changes
    when a file is added, removed, replaced or rewritten, at the cost of one ``stat`` per file, never a read.

    The stages that read audio named by a manifest record it, so a fixed audio file is seen on the next run
    although the manifest is unchanged."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = Path(path).stat()
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
            continue
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def meta_path(output: str | Path) -> Path:
    """The sidecar path of a stage's primary output."""
    output = Path(output)
    return output.with_name(output.name + ".meta.json")


@dataclass(frozen=True)
class StageRecord:
    """What a stage run depends on; compared field by field to decide skipping."""

    stage: str
    inputs: Mapping[str, Mapping[str, int]]
    params: Mapping[str, Any]
    outputs: Sequence[str]
    version: str

    @classmethod
    def create(
        cls,
        stage: str,
        inputs: Sequence[str | Path],
        params: Mapping[str, Any],
        outputs: Sequence[str | Path],
    ) -> "StageRecord":
        return cls(
            stage=stage,
            inputs={str(Path(p).resolve()): fingerprint(p) for p in inputs},
            params=_jsonable(params),
            outputs=[str(Path(p).resolve()) for p in outputs],
            version=choral_version(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "version": self.version,
            "inputs": dict(self.inputs),
            "params": dict(self.params),
            "outputs": list(self.outputs),
        }


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as they would read back from JSON, so comparisons are exact."""
    return json.loads(json.dumps(dict(params), default=str))


def is_up_to_date(record: StageRecord, primary_output: str | Path) -> bool:
    """True when all outputs exist and the sidecar matches ``record`` exactly (the reason it does not,
    or that it does, is logged at info level: ``choral -v`` tells why a stage runs)."""
    reason = stale_reason(record, primary_output)
    if reason is None:
        log.info("%s: %s is up to date, skipped", record.stage, primary_output,
                 extra={"stage": record.stage, "path": str(primary_output)})
    else:
        log.info("%s: runs, %s", record.stage, reason, extra={"stage": record.stage, "path": str(primary_output)})
    return reason is None


def stale_reason(record: StageRecord, primary_output: str | Path) -> str | None:
    """Why the stage of ``record`` must run (a short phrase), or None when its outputs are up to date."""
    missing = [p for p in record.outputs if not Path(p).exists()]
    if missing:
        return f"output {missing[0]} does not exist"
    sidecar = meta_path(primary_output)
    try:
        stored = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no readable record of the last run ({sidecar})"
    current = record.to_dict()
    if stored == current:
        return None
    if not isinstance(stored, dict):
        return f"{sidecar} is not a stage record"
    if stored.get("version") != current["version"]:
        return f"choral version changed ({stored.get('version')} -> {current['version']})"
    inputs, params = stored.get("inputs"), stored.get("params")
    stored_inputs = inputs if isinstance(inputs, dict) else {}
    for path, stamp in current["inputs"].items():
        if stored_inputs.get(path) != stamp:
            return f"input {path} is new or changed"
    if set(stored_inputs) != set(current["inputs"]):
        return "an input was removed"
    stored_params = params if isinstance(params, dict) else {}
    changed = sorted(k for k in set(stored_params) | set(current["params"])
                     if stored_params.get(k) != current["params"].get(k))
    if changed:
        return f"parameters changed ({', '.join(changed)})"
    return "outputs or stage name changed"


def write_meta(record: StageRecord, primary_output: str | Path) -> None:
    """Record a completed stage run next to its primary output."""
    write_json(record.to_dict(), meta_path(primary_output))
