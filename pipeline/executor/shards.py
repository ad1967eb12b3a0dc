"""Cutting a cut manifest into shards for a distributed decode, and the index that joins their outputs.

Shard ``k`` holds cuts ``k*n .. k*n+n-1`` of the manifest (``n = shard_cuts``) in
``decode/shards/NNNNNN/cuts.jsonl.gz``; its decode writes ``decoded.jsonl.gz``, ``embeddings.h5`` and
``failed.jsonl`` beside it, atomically, with the decode stage's own ``.meta.json`` sidecar. A shard's input
file is rewritten only when its bytes change (``.jsonl.gz`` headers hold no time, so equal cuts give equal
bytes): an unchanged shard keeps its size and mtime, its sidecar still matches, and a rerun after a crash
decodes only the shards that have no complete output. ``decoded.shards.json`` lists the decoded shards in
order; every reader of :mod:`choral.pipeline.manifest` reads it as one manifest.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Iterator

from ..manifest import SHARD_INDEX_SUFFIX, atomic_output, iter_json_lines, write_json

INDEX_NAME = "decoded" + SHARD_INDEX_SUFFIX
SHARDS = "shards"


def shard_folder(out_dir: Path, index: int) -> Path:
    """``out_dir/shards/NNNNNN``: the folder of shard ``index``."""
    return out_dir / SHARDS / f"{index:06d}"


def _chunks(cuts_path: Path, shard_cuts: int) -> Iterator[list[str]]:
    """The manifest's lines (re-serialised compactly), ``shard_cuts`` at a time."""
    chunk: list[str] = []
    for _, data in iter_json_lines(cuts_path):
        chunk.append(json.dumps(data, ensure_ascii=False))
        if len(chunk) == shard_cuts:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _gzip_bytes(text: str) -> bytes:
    """``text`` gzip-compressed with no time and no name in the header (the same bytes every time)."""
    return gzip.compress(text.encode("utf-8"), mtime=0)


def write_shard_inputs(cuts_path: Path, out_dir: Path, shard_cuts: int) -> list[Path]:
    """Cut ``cuts_path`` into shard inputs under ``out_dir/shards``; return their paths in order.

    A shard input whose content is unchanged is left alone (its decode stays up to date); shard folders
    beyond the new count (the manifest shrank) are removed."""
    paths = []
    for index, lines in enumerate(_chunks(cuts_path, shard_cuts)):
        path = shard_folder(out_dir, index) / "cuts.jsonl.gz"
        content = _gzip_bytes("".join(line + "\n" for line in lines))
        if not (path.is_file() and path.read_bytes() == content):
            with atomic_output(path) as tmp:
                tmp.write_bytes(content)
        paths.append(path)
    root = out_dir / SHARDS
    for stale in sorted(root.iterdir()) if root.is_dir() else []:
        if stale.is_dir() and stale.name.isdigit() and int(stale.name) >= len(paths):
            shutil.rmtree(stale)
    return paths


def write_index(out_dir: Path, decoded: list[Path]) -> Path:
    """Write ``out_dir/decoded.shards.json`` naming the decoded shards (relative to it), atomically."""
    path = out_dir / INDEX_NAME
    write_json({"format": "choral shard index", "shards": [str(p.relative_to(out_dir)) for p in decoded]}, path)
    return path
