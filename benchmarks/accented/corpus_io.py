"""Reading and writing the accented corpus' lhotse manifests.

Audio paths are stored relative to the repository root when the corpus lives inside the
repository (the committed demo set), so manifests stay valid in any clone; ``load_cuts``
rebases them onto the root so they resolve from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from lhotse import CutSet, SupervisionSet

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO_ROOT / "benchmarks" / "accented" / "demo"


def stored_path(audio: Path) -> str:
    """The path written into a manifest: repository-relative inside the repo, else absolute."""
    audio = audio.resolve()
    try:
        return audio.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(audio)


def load_cuts(manifest: str | Path, root: Path = REPO_ROOT) -> CutSet:
    """Cuts whose relative audio paths are made absolute against ``root`` (eager, small sets)."""
    cuts = CutSet.from_file(manifest).to_eager()
    first = next(iter(cuts), None)
    if first is not None and not os.path.isabs(first.recording.sources[0].source):
        cuts = cuts.with_recording_path_prefix(str(root)).to_eager()
    return cuts


def load_references(path: str | Path) -> SupervisionSet:
    """The reference supervisions (id = cut id, custom accent); only evaluation reads them."""
    return SupervisionSet.from_file(path).to_eager()


def load_demo() -> tuple[CutSet, SupervisionSet]:
    """The committed demo set: its cuts (paths rebased) and references."""
    return load_cuts(DEMO_DIR / "cuts.jsonl.gz"), load_references(DEMO_DIR / "references.jsonl.gz")
