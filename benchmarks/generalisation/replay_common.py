"""What the offline replays (``replay_far.py``, ``replay_scored.py``, ``replay_hub.py``) share: the pools of a draw,
the draws they must refuse, reading a run's manifests, and collecting one row list over development draws."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Callable, Sequence

from choral.pipeline.text import TextNormalizer

POOLS: tuple[str, ...] = ("generator", "unseen-words")
# the reported pools' data folders (run_protocol's default, the large pools, the fresh held-out draws): never replayed
REPORTED: tuple[str, ...] = ("data", "large", "draw32", "draw33", "draw34")

PoolRows = Callable[[Path, Path, TextNormalizer], list[dict]]


def read_jsonl(path: Path) -> list[dict]:
    """Every line of a gzipped JSON-lines manifest."""
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def conditions(cuts: Sequence[dict]) -> dict[str, str]:
    """Each protocol cut's condition (its first supervision's ``custom.accent``; ``?`` when it has none)."""
    return {c["id"]: c["supervisions"][0].get("custom", {}).get("accent", "?") for c in cuts}


def read_references(data: Path, normalize: TextNormalizer) -> dict[str, str]:
    """A pool's normalised references by cut id."""
    return {r["id"]: normalize(r["text"]) for r in read_jsonl(data / "references.jsonl.gz")}


def dev_rows(parser: argparse.ArgumentParser, draws: Sequence[Path], pool_rows: PoolRows) -> list[dict]:
    """``pool_rows(data, run, normalize)`` over every pool of ``draws``; a reported draw is a usage error."""
    normalize = TextNormalizer()
    rows: list[dict] = []
    for draw in draws:
        if draw.resolve().name in REPORTED:
            parser.error(f"{draw}: a reported draw; replay development draws only")
        for pool in POOLS:
            rows += pool_rows(draw / pool, draw / "runs" / pool, normalize)
    return rows
