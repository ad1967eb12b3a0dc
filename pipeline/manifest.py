"""Manifest I/O in one place: lazy lhotse JSONL reading and atomic writing.

Every reader error names the file and line; every writer writes to a temporary
name in the destination folder and renames it only when complete, so a killed
run never leaves a half-written manifest under the real name.

The fast path, for manifests of a million cuts: lines are decoded by orjson
(several times faster than ``json``; a line orjson refuses, such as one with
JSON's ``NaN``, is decoded again by ``json``, so both accept the same files and
the errors read the same), and a stage that only adds fields to cuts it read
passes the JSON object through (:func:`iter_cut_dicts`, :meth:`CutWriter.write_dict`)
instead of building lhotse objects and serialising them again with ``to_dict``.
A cut's dict written by choral is already what ``to_dict`` gives, so the written
bytes are the same.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import secrets
import shutil
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Literal, Mapping

import orjson
from lhotse.cut import Cut
from lhotse.serialization import deserialize_item

from .errors import ChoralError, InputError


def _open_text(path: Path, mode: Literal["r", "w"]) -> IO[str]:
    """A text stream on ``path``, gzip-compressed for ``.gz``. Written gzip headers hold neither a time nor
    the (temporary) file name, so the same content gives the same bytes in every run."""
    if path.suffix != ".gz":
        return open(path, mode, encoding="utf-8")
    if mode == "r":
        return gzip.open(path, "rt", encoding="utf-8")
    raw = open(path, "wb")
    try:
        return io.TextIOWrapper(_ClosingGzip(raw), encoding="utf-8")
    except BaseException:
        raw.close()
        raise


GZIP_LEVEL = 6  # gzip's own default: a third of level 9's CPU on manifests, 3% larger files


class _ClosingGzip(gzip.GzipFile):
    """A GzipFile writing to an open file it also closes, with an empty name and mtime 0 in its header."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL)
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def check_readable(path: str | Path) -> Path:
    """Return ``path`` as a Path, or raise an InputError if it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a file")
    return path


def _decode(line: bytes) -> object:
    """One JSON value: orjson first, ``json`` for what orjson refuses (NaN, huge integers) or to word the error."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


SHARD_INDEX_SUFFIX = ".shards.json"  # a manifest written in shards: a JSON index naming them in order


def shard_manifests(path: str | Path) -> list[Path] | None:
    """The shard files a shard index (``NAME.shards.json``: ``{"shards": [relative paths]}``) names, in order;
    None when ``path`` is an ordinary manifest. A missing shard or a malformed index is an InputError naming it.

    Every reader of this module reads an index as the concatenation of its shards, lazily, so the stages after
    a sharded decode take it as they take one ``decoded.jsonl.gz``."""
    path = Path(path)
    if not path.name.endswith(SHARD_INDEX_SUFFIX):
        return None
    try:
        data = json.loads(check_readable(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"not a readable shard index ({error})") from None
    names = data.get("shards") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InputError(path, "a shard index needs a list of shard file names under 'shards'")
    shards = [path.parent / name for name in names]
    for shard in shards:
        if not shard.is_file():
            raise InputError(path, f"its shard {shard} is missing (rerun the decode stage)")
    return shards


def iter_json_lines(path: str | Path, *, require_id: bool = True) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)`` for each non-blank line of a JSONL(.gz) file of objects with an ``id``
    (lhotse manifests; ``require_id=False`` for NeMo manifests, whose entries have none).

    Raises InputError naming the file and line for malformed JSON, a line that is
    not such an object, and an unreadable or corrupt file.
    """
    path = check_readable(path)
    shards = shard_manifests(path)
    if shards is not None:  # a sharded manifest (Ray decode): its shards, in order, as one manifest
        for shard in shards:
            yield from iter_json_lines(shard, require_id=require_id)
        return
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as stream:
            for line_number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    data = _decode(line)
                except json.JSONDecodeError as error:
                    raise InputError(path, f"malformed JSON ({error.msg})", line=line_number) from None
                if not isinstance(data, dict) or (require_id and "id" not in data):
                    raise InputError(path, "expected a JSON object" + (" with an 'id'" if require_id else ""),
                                     line=line_number)
                yield line_number, data
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read ({error})") from None


def iter_cut_dicts(path: str | Path) -> Iterator[dict]:
    """The cuts of a manifest as JSON objects, with :func:`iter_cuts`'s duplicate-id and empty-manifest checks
    but no lhotse objects: for a stage that reads back a manifest it has already validated and passes each
    cut through (:meth:`CutWriter.write_dict`), adding fields."""
    first_line: dict[str, int] = {}
    for line_number, data in iter_json_lines(path):
        check_unique_id(first_line, str(data["id"]), path, line_number)
        yield data
    if not first_line:
        raise InputError(path, "manifest holds no cuts")


def iter_cuts(path: str | Path) -> Iterator[Cut]:
    """Yield the cuts of a lhotse JSONL(.gz) manifest lazily, one line at a time.

    Raises InputError naming the file and line for a malformed line, for a cut id
    seen before in the file (every stage keys its outputs by cut id: a duplicate
    would be exported and evaluated twice), and for a manifest that holds no cut.
    The id check keeps only the ids, so every stage gets it while it reads.
    """
    path = Path(path)
    first_line: dict[str, int] = {}
    for line_number, data in iter_json_lines(path):
        try:
            cut = deserialize_item(data)
        except Exception as error:  # lhotse raises many kinds
            raise InputError(path, f"not a lhotse cut ({error})", line=line_number,
                             cut_id=str(data.get("id"))) from None
        if not isinstance(cut, Cut):
            raise InputError(path, f"expected a cut, found a {type(cut).__name__}", line=line_number)
        check_unique_id(first_line, cut.id, path, line_number)
        yield cut
    if not first_line:
        raise InputError(path, "manifest holds no cuts")


def check_unique_id(first_line: dict[str, int], cut_id: str, path: str | Path, line: int) -> None:
    """Record that ``cut_id`` is on ``line`` of ``path`` in ``first_line``; an InputError naming the file,
    the line and the id if an earlier line had it (the one duplicate-id rule of every manifest reader)."""
    earlier = first_line.setdefault(cut_id, line)
    if earlier != line:
        raise InputError(path, f"duplicate cut id (first on line {earlier})", line=line, cut_id=cut_id)


def audio_paths(path: str | Path, root: str | Path | None = None) -> list[Path]:
    """The audio files a lhotse manifest's recordings read (``file`` sources; relative ones against ``root``,
    as ``audio_root`` makes them absolute), each once, in first-seen order; read as JSON, without building cuts."""
    root = None if root is None else Path(root).resolve()
    found: dict[Path, None] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            source = node.get("source")
            if node.get("type") == "file" and isinstance(source, str):
                found.setdefault(root / source if root is not None and not os.path.isabs(source) else Path(source))
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for _, data in iter_json_lines(path):
        walk(data.get("recording"))
        walk(data.get("tracks"))  # mixed cuts
    return list(found)


def read_cuts(path: str | Path) -> list[Cut]:
    """All cuts of a manifest in memory (stages that need random access use this)."""
    return list(iter_cuts(path))


def temporary_name(path: Path) -> Path:
    """A unique sibling name for ``path`` that keeps its suffixes (lhotse infers format from them):
    ``.NAME.tmp.PID.RANDOM.SUFFIXES``. The PID tells a later run whether its writer is gone
    (:func:`remove_orphans`); the random part keeps others in a shared folder from planting a symlink
    under the name a run is about to write."""
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    return path.with_name(f".{stem}.tmp.{os.getpid()}.{secrets.token_hex(4)}{suffixes}")


_LEFTOVER = re.compile(r"\..+\.(?:tmp|old)\.(\d+)(?:\..*)?")  # temporary_name / atomic_directory names


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(folder: str | Path) -> list[Path]:
    """Remove the temporary files and folders (``.NAME.tmp.PID...``, ``.NAME.old.PID``) that processes which
    no longer run left below ``folder`` (a run killed with SIGKILL cannot clean up; with saved frames they are
    as large as the pool). Call it under the folder's lock; a live process's files are left alone.
    Returns what was removed."""
    removed = []
    for root, folders, files in os.walk(folder):
        for name in [*files, *folders]:
            found = _LEFTOVER.fullmatch(name)
            if found is None or int(found.group(1)) == os.getpid() or _alive(int(found.group(1))):
                continue
            path = Path(root) / name
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as error:
                raise write_error(path, error, "cannot remove the leftover of a dead run") from None
            removed.append(path)
        folders[:] = [f for f in folders if (Path(root) / f).is_dir()]
    return removed


class OutputError(ChoralError):
    """An output (or its folder) cannot be written: a read-only or full disk, a path below a regular file."""


_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)")  # h5py spells the OS error inside its message


def write_error(path: str | Path, error: OSError, doing: str = "cannot write") -> OutputError:
    """``<path>: <doing> (<reason>)``: the one line an OSError while writing ``path`` becomes.

    The reason is the OS's (``No space left on device``, ``Permission denied``), also when h5py hides its
    errno inside a long message."""
    code = error.errno
    if code is None:
        found = _ERRNO_IN_TEXT.search(str(error))
        code = int(found.group(1)) if found else None
    if code:
        reason = os.strerror(code)
    else:
        text = str(error).strip()
        reason = text.splitlines()[0][:200] if text else type(error).__name__
    return OutputError(f"{path}: {doing} ({reason})")


def make_folder(path: str | Path, what: str = "folder") -> Path:
    """``mkdir -p path``; an OutputError naming it when it cannot be made (a regular file on the way, a
    read-only parent)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error, f"cannot create the {what}") from None
    return path


def _belongs_to(error: OSError, *paths: Path) -> bool:
    """True when ``error`` is about writing one of ``paths`` (or names no file: h5py, gzip flushes)."""
    named = getattr(error, "filename", None)
    return named is None or any(Path(str(named)) == p for p in paths)


def _sync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk: a power loss after the rename must not leave
    a renamed but empty file."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename is still atomic
    finally:
        os.close(descriptor)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only if the block succeeds.

    An OSError while writing (a full disk, a read-only folder) becomes an :class:`OutputError` naming
    ``path``, and the temporary file is removed."""
    path = Path(path)
    make_folder(path.parent)
    tmp = temporary_name(path)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, path)
        _sync(path.parent)
    except OSError as error:
        if not _belongs_to(error, tmp, path, path.parent):
            raise
        raise write_error(path, error) from None
    finally:
        try:
            if tmp.exists():
                tmp.unlink()
        except OSError:
            pass  # a folder we cannot write in holds no temporary file of ours


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces ``path`` only if the block succeeds (an OSError
    while writing is an :class:`OutputError` naming ``path``)."""
    path = Path(path)
    make_folder(path.parent)
    tmp = temporary_name(path)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as error:
        raise write_error(path, error, "cannot create") from None
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(tmp, path)
        _sync(path.parent)
    except OSError as error:
        named = getattr(error, "filename", None)
        if named is not None and not str(named).startswith((str(tmp), str(path))):
            raise
        raise write_error(path, error) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class CutWriter:
    """Write cuts as JSONL(.gz) to a temporary file; ``close`` renames it into place.

    Use as a context manager: on an exception the temporary file is removed and
    nothing appears under the destination name; an OSError while writing (a full
    disk) is an :class:`OutputError` naming the destination.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._context = atomic_output(self.path)
        self._tmp = self._context.__enter__()
        try:
            self._stream = _open_text(self._tmp, "w")
        except OSError as error:
            self._context.__exit__(type(error), error, error.__traceback__)
            raise write_error(self.path, error) from None
        self.count = 0

    def write(self, cut: Cut) -> None:
        self.write_dict(cut.to_dict())

    def write_dict(self, data: dict) -> None:
        """Write a cut given as its JSON object (what ``Cut.to_dict`` returns, or a line read back)."""
        self._stream.write(json.dumps(data, ensure_ascii=False))
        self._stream.write("\n")
        self.count += 1

    def __enter__(self) -> "CutWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._stream.close()  # flushes: a full disk shows here
        except OSError as error:
            if exc is None:
                exc_type, exc, tb = type(error), error, error.__traceback__
        # the context renames the file, or removes it and turns an OSError into an OutputError (raised here)
        self._context.__exit__(exc_type, exc, tb)
        if exc is not None and isinstance(exc, OSError):
            raise exc


def write_cuts(cuts, path: str | Path) -> int:
    """Write an iterable of cuts atomically; return how many were written."""
    with CutWriter(path) as writer:
        for cut in cuts:
            writer.write(cut)
    return writer.count


def write_json(data: object, path: str | Path) -> None:
    """Write JSON atomically (pretty-printed, for humans and tools alike)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_failures(path: str | Path, failures: Mapping[str, str]) -> None:
    """Write ``failed.jsonl`` atomically: one ``{"id", "reason"}`` line per cut that could not be used."""
    with atomic_output(path) as tmp:
        tmp.write_text("".join(json.dumps({"id": k, "reason": v}) + "\n" for k, v in failures.items()),
                       encoding="utf-8")


def array_storage_files(manifest: str | Path, fields: tuple[str, ...] = ("embedding", "frames")) -> list[Path]:
    """Array storage files (e.g. embeddings.h5) the first cut points at, so their changes count as input changes."""
    try:
        first = next(iter_cuts(manifest))
    except (StopIteration, InputError):
        return []
    paths = []
    for name in fields:
        array = (getattr(first, "custom", None) or {}).get(name)
        storage = getattr(getattr(array, "array", array), "storage_path", None)
        if storage and Path(storage).is_file():
            paths.append(Path(storage))
    return paths
