"""Cutting a cut manifest into shards for a distributed decode, and the index that joins their outputs.

A shard holds about ``shard_cuts`` consecutive cuts of the manifest (whole decode batches) in
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

from ..decode import DecodeConfig
from ..manifest import SHARD_INDEX_SUFFIX, atomic_output, iter_json_lines, write_json

INDEX_NAME = "decoded" + SHARD_INDEX_SUFFIX
SHARDS = "shards"


def shard_folder(out_dir: Path, index: int) -> Path:
    """``out_dir/shards/NNNNNN``: the folder of shard ``index``."""
    return out_dir / SHARDS / f"{index:06d}"


class _Sized:
    """A cut line seen as what decode's batching reads: its duration."""

    def __init__(self, line: str, duration: float, counted: bool = True) -> None:
        self.line, self.duration, self.counted = line, duration, counted


def _chunks(cuts_path: Path, shard_cuts: int, config: DecodeConfig) -> Iterator[list[str]]:
    """The manifest's lines (re-serialised compactly), in shards of whole decode batches.

    A shard closes at the first batch boundary after ``shard_cuts`` cuts, so each shard's decode forms
    exactly the batches of the same cuts that a local decode forms (decode's own :func:`_batches` over the
    cuts within the duration limits); the teacher's scores depend on a batch's padding, so equal batches give
    equal n-best lists, score for score. Cuts outside the limits stay in the shard they fall in."""
    chunk: list[str] = []
    batch: list[_Sized] = []
    decodable = 0

    def close_batch() -> None:
        nonlocal decodable
        chunk.extend(item.line for item in batch)
        decodable += sum(b.counted for b in batch)
        batch.clear()

    for _, data in iter_json_lines(cuts_path):
        line = json.dumps(data, ensure_ascii=False)
        duration = data.get("duration")
        if not isinstance(duration, (int, float)) or config.refusal(float(duration)) is not None:
            if batch:
                batch.append(_Sized(line, 0.0, counted=False))  # refused: kept in place, not in the batch
            else:
                chunk.append(line)
            continue
        pending = [b for b in batch if b.counted]
        if pending and sum(b.duration for b in pending) + float(duration) > config.batch_duration:
            close_batch()
            if decodable >= shard_cuts:
                yield chunk
                chunk, decodable = [], 0
        batch.append(_Sized(line, float(duration)))
    close_batch()
    if chunk:
        yield chunk


def _gzip_bytes(text: str) -> bytes:
    """``text`` gzip-compressed with no time and no name in the header (the same bytes every time)."""
    return gzip.compress(text.encode("utf-8"), mtime=0)


def write_shard_inputs(cuts_path: Path, out_dir: Path, shard_cuts: int, config: DecodeConfig) -> list[Path]:
    """Cut ``cuts_path`` into shard inputs under ``out_dir/shards``; return their paths in order.

    A shard input whose content is unchanged is left alone (its decode stays up to date); shard folders
    beyond the new count (the manifest shrank) are removed."""
    paths = []
    for index, lines in enumerate(_chunks(cuts_path, shard_cuts, config)):
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
