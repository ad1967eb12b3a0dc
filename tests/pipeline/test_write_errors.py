"""Unwritable outputs are one line naming the path, never a traceback or a half-written file (issue 16):
a read-only run or stage folder, a run_dir below a regular file, a full disk (ENOSPC from the manifest
writer and from h5py), and a ``.lock`` symlink, which must not be followed."""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline import manifest as manifest_module
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import OutputError, make_folder, write_cuts, write_error, write_json
from choral.pipeline.run import run_lock
from choral.pipeline.synthetic import SyntheticCorpus
from choral.pipeline.teacher import TransducerConfig, TransducerTeacher, save_teacher

runner = CliRunner()
ROOT = os.geteuid() == 0  # root writes into read-only folders: those cases are simulated below
TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=1, embedding_dim=8,
                        predictor_hidden=16, joiner_dim=16, dropout=0.0)
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp." in p.name or ".old." in p.name)


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def tone_manifest(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cuts = []
    for i in range(n):
        path = folder / f"t{i}.wav"
        t = np.arange(16_000) / 16_000
        sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 16_000)
        cuts.append(Recording.from_file(path, recording_id=f"t{i}").to_cut())
    write_cuts(cuts, folder / "cuts.jsonl.gz")
    return folder / "cuts.jsonl.gz"


def test_run_dir_below_a_regular_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match=r"file/run: cannot create the run directory \(Not a directory\)"):
        with run_lock(tmp_path / "file" / "run"):
            pass
    manifest = tone_manifest(tmp_path / "audio")
    config = tmp_path / "run.yaml"
    config.write_text(f"input:\n  cuts: {manifest}\n")
    line = one_error_line(runner.invoke(app, ["run", str(config), "--run-dir", str(tmp_path / "file" / "run")]))
    assert line == f"choral run: error: {tmp_path / 'file' / 'run'}: cannot create the run directory (Not a directory)"
    with pytest.raises(OutputError, match="cannot create the folder"):
        write_json({}, tmp_path / "file" / "x" / "out.json")


def test_the_lock_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(OutputError, match=r"\.lock: is a symbolic link"):
        with run_lock(run):
            pass
    assert victim.read_text() == "precious"
    (run / ".lock").unlink()
    (run / ".lock").write_text("left by an old run")
    with run_lock(run):  # an existing lock file is reused, not truncated or replaced
        pass
    assert (run / ".lock").read_text() == "left by an old run"


def test_an_unwritable_lock_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(OutputError, match=r"run/\.lock: cannot create the lock file \(Permission denied\)"):
        with run_lock(tmp_path / "run"):
            pass


@pytest.mark.skipif(ROOT, reason="root ignores folder permissions")
def test_a_read_only_stage_folder_is_one_line(small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        line = one_error_line(runner.invoke(app, ["group", str(small_corpus.decoded), str(out / "grouped.jsonl.gz")]))
        assert line.startswith(f"choral group: error: {out / 'grouped.jsonl.gz'}: cannot write (Permission denied)")
        with pytest.raises(OutputError, match="cannot create the lock file"):
            with run_lock(out):
                pass
    finally:
        out.chmod(0o755)


def test_a_refused_temporary_file_is_one_line(small_corpus: SyntheticCorpus, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What a read-only stage folder does, as root too: opening the temporary file is refused."""
    real = manifest_module._open_text

    def refused(path: Path, mode):
        if mode == "w":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, mode)

    monkeypatch.setattr(manifest_module, "_open_text", refused)
    output = tmp_path / "grouped.jsonl.gz"
    line = one_error_line(runner.invoke(app, ["group", str(small_corpus.decoded), str(output)]))
    assert line == f"choral group: error: {output}: cannot write (Permission denied)"
    assert list(tmp_path.iterdir()) == []


class FullDisk:
    """A text stream that takes ``room`` characters, then fails as a full disk does (on write and on close)."""

    def __init__(self, stream, room: int) -> None:
        self.stream, self.room = stream, room

    def write(self, text: str) -> int:
        self.room -= len(text)
        if self.room < 0:
            raise ENOSPC
        return self.stream.write(text)

    def close(self) -> None:
        self.stream.close()
        if self.room < 0:
            raise ENOSPC


@pytest.mark.parametrize("room", [5_000, 10**9])
def test_a_full_disk_while_writing_a_manifest_is_one_line(small_corpus: SyntheticCorpus, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    real = manifest_module._open_text
    monkeypatch.setattr(manifest_module, "_open_text",
                        lambda path, mode: FullDisk(real(path, mode), room) if mode == "w" else real(path, mode))
    if room > 10**8:  # the disk fills while the last block is flushed
        monkeypatch.setattr(FullDisk, "close", lambda self: (self.stream.close(), (_ for _ in ()).throw(ENOSPC)))
    output = tmp_path / "out" / "grouped.jsonl.gz"
    with pytest.raises(OutputError) as caught:
        group_manifest(small_corpus.decoded, output)
    assert str(caught.value) == f"{output}: cannot write (No space left on device)"
    assert list((tmp_path / "out").iterdir()) == []


def test_a_full_disk_in_h5py_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lhotse.features.io import NumpyHdf5Writer

    manifest = tone_manifest(tmp_path / "audio")
    teacher = tmp_path / "teacher.pt"
    save_teacher(TransducerTeacher.random(TINY, seed=1), teacher)

    def full(self, key, value, **kwargs):
        raise OSError("Can't write data (file write failed: time = Mon Nov 30 12:00:00 2026, filename = "
                      "'x.h5', file descriptor = 5, errno = 28, error message = 'No space left on device', "
                      "buf = 0x1, total write size = 64, bytes this sub-write = 64, offset = 0)")

    monkeypatch.setattr(NumpyHdf5Writer, "store_array", full)
    run = tmp_path / "run"
    result = runner.invoke(app, ["decode", str(manifest), str(run), "--teacher", str(teacher)])
    assert one_error_line(result) == (f"choral decode: error: {run / 'embeddings.h5'}: cannot write "
                                      "(No space left on device)")
    assert list(run.iterdir()) == []


def test_write_error_reasons() -> None:
    assert str(write_error("x", ENOSPC)) == "x: cannot write (No space left on device)"
    assert str(write_error("x", OSError("something odd\nmore"))) == "x: cannot write (something odd)"
    assert str(write_error("x", OSError(), "cannot create")) == "x: cannot create (OSError)"


def test_gzip_outputs_are_byte_identical_across_runs(tmp_path: Path) -> None:
    """The gzip header held the write time and the temporary name with its PID."""
    manifest = tone_manifest(tmp_path / "audio")
    cuts = list(manifest_module.iter_cuts(manifest))
    write_cuts(cuts, tmp_path / "a.jsonl.gz")
    os.utime(tmp_path / "a.jsonl.gz", (0, 0))
    write_cuts(cuts, tmp_path / "b" / "a.jsonl.gz")
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b" / "a.jsonl.gz").read_bytes()
    with gzip.open(tmp_path / "a.jsonl.gz", "rt") as stream:
        assert len(stream.read().splitlines()) == 3
    assert make_folder(tmp_path / "c" / "d").is_dir()

