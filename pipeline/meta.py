"""``<output>.meta.json`` sidecars: what a stage read, with which parameters, by which choral.

A stage is up to date when every output exists and its sidecar records the same
stage, parameters, choral version, and input fingerprints (size and mtime) as the
run about to start; then the stage is skipped and says so. The sidecar is written
last, after the outputs were renamed into place, so a killed run never looks
up to date.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from .manifest import write_json


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
    """True when all outputs exist and the sidecar matches ``record`` exactly."""
    if not all(Path(p).exists() for p in record.outputs):
        return False
    sidecar = meta_path(primary_output)
    try:
        stored = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stored == record.to_dict()


def write_meta(record: StageRecord, primary_output: str | Path) -> None:
    """Record a completed stage run next to its primary output."""
    write_json(record.to_dict(), meta_path(primary_output))
