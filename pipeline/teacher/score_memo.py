"""Teacher scores kept on disk, so ``choral tune``, ``choral propagate`` and their reruns score a pair once.

A :class:`ScoreMemo` is an SQLite file (``<grouped manifest>.scores.sqlite`` next to
the manifest) of ``(cut id, text) -> log-likelihood``. It belongs to one fingerprint:
the scorer's name (teacher path and lattice options) and the size and mtime of the
grouped manifest and of every teacher file. A file with another fingerprint is
emptied on opening, so scores never outlive the teacher, the frames they came from
(a new decode rewrites the grouped manifest) or the scoring options. It is a cache,
not a stage output: deleting it only costs the scoring again, and a file that cannot
be opened or written is ignored (logged), never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

_CHUNK = 500  # keys per SELECT (SQLite bounds the parameters of one statement)


def memo_path(grouped: str | Path) -> Path:
    """Where the scores of a grouped manifest's cuts are kept."""
    grouped = Path(grouped)
    return grouped.with_name(grouped.name + ".scores.sqlite")


def fingerprint(name: str, files: Sequence[Path]) -> str:
    """A digest of the scorer's name and the size and mtime of ``files``."""
    parts = [name]
    for path in files:
        stat = Path(path).stat()
        parts.append(f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class ScoreMemo:
    """Scores on disk under one fingerprint (see the module docstring)."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self._db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("CREATE TABLE IF NOT EXISTS meta (fingerprint TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS scores (cut TEXT, text TEXT, score REAL, PRIMARY KEY (cut, text))")
            row = db.execute("SELECT fingerprint FROM meta").fetchone()
            if row is None or row[0] != key:
                with db:
                    db.execute("DELETE FROM scores")
                    db.execute("DELETE FROM meta")
                    db.execute("INSERT INTO meta VALUES (?)", (key,))
            self._db = db
        except sqlite3.Error as error:
            log.warning("score memo %s unusable (%s): scores are kept in memory only", self.path, error)

    def __getstate__(self) -> dict[str, object]:
        """Pickled (for a worker process or a Ray actor) as its path and fingerprint; the copy reconnects."""
        return {"path": self.path, "key": self.key}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["path"], state["key"])  # type: ignore[misc]

    def get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """The stored scores of those ``(cut id, text)`` keys that have one."""
        found: dict[tuple[str, str], float] = {}
        if self._db is None or not keys:
            return found
        wanted = set(keys)
        cuts = sorted({cut for cut, _ in keys})
        try:
            for begin in range(0, len(cuts), _CHUNK):
                chunk = cuts[begin: begin + _CHUNK]
                rows = self._db.execute(f"SELECT cut, text, score FROM scores WHERE cut IN "
                                        f"({','.join('?' * len(chunk))})", chunk)
                found.update(((cut, text), score) for cut, text, score in rows if (cut, text) in wanted)
        except sqlite3.Error as error:
            log.warning("score memo %s unreadable (%s)", self.path, error)
        return found

    def put_many(self, items: dict[tuple[str, str], float]) -> None:
        """Store scores (one transaction)."""
        if self._db is None or not items:
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)",
                                     [(cut, text, score) for (cut, text), score in items.items()])
        except sqlite3.Error as error:
            log.warning("score memo %s not written (%s)", self.path, error)

    def __len__(self) -> int:
        if self._db is None:
            return 0
        return int(self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
