"""SIGTERM (cron, systemd, SLURM, Kubernetes) is handled like Ctrl-C: exit 143, a message, and no temporary
file left behind (issue 16: it exited 143 silently and left ``.tmp.PID`` files)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import typer

from choral.cli.common import Terminated, stage_errors
from choral.pipeline.manifest import CutWriter, atomic_output

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import typer
    from choral.cli.common import stage_errors
    from choral.pipeline.manifest import CutWriter, atomic_output

    out = Path(sys.argv[1])
    try:
        with stage_errors("test"):
            with CutWriter(out / "cuts.jsonl.gz"), atomic_output(out / "arrays.h5") as tmp:
                tmp.write_bytes(b"partial")
                (out / "ready").write_text("")
                time.sleep(60)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
""")


def test_sigterm_exits_143_with_a_message_and_removes_temporary_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "ready").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    assert len(list(out.glob(".*.tmp.*"))) == 2
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert stderr.strip() == "choral test: terminated (SIGTERM); temporary files removed, no output was written"
    assert sorted(p.name for p in out.iterdir()) == ["ready"]


def test_terminated_is_an_interrupt_every_writer_cleans_up_after(tmp_path: Path) -> None:
    with pytest.raises(typer.Exit) as stop:
        with stage_errors("test"):
            with CutWriter(tmp_path / "a.jsonl.gz"), atomic_output(tmp_path / "b.json") as tmp:
                tmp.write_text("x")
                signal.raise_signal(signal.SIGTERM)
    assert stop.value.exit_code == 143 and list(tmp_path.iterdir()) == []
    assert isinstance(Terminated(), KeyboardInterrupt) and str(Terminated()) == "terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored after the command
