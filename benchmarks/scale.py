"""Time and measure every rescoring stage at scale: synth -> group -> graph -> tune -> propagate -> export -> eval.

Each stage runs as its own ``choral`` process on a synthetic corpus (``choral synth --cuts N``), as a user
running the stages one by one would; the parent waits for it with ``os.wait4``, which returns that child's
own resource usage, so the peak resident set size (``ru_maxrss``) of every stage is measured separately.

Printed per size and stage: wall seconds, CPU seconds, cuts per second and peak RSS; then, when the smallest
and largest sizes both ran, the cost-per-cut ratio ``(seconds / cuts at the largest) / (seconds / cuts at the
smallest)`` of each stage and of group..eval together, in wall and in CPU seconds (linear scaling gives 1.0;
the target is <= 1.5), and tune's CPU over propagate's at every size.

Usage::

    OMP_NUM_THREADS=1 nice python benchmarks/scale.py --cuts 10000 100000 [--work /tmp/scale] [--timeout 1800]

``--choral "python -m ..."`` runs another build (the before/after comparison runs the same sizes through
the previous commit's tree); ``--stages group graph`` runs only those (the earlier outputs must exist).
``--json out.json`` also writes the figures. A stage that exceeds ``--timeout`` is killed and reported as
unfinished, with the RSS it had reached; the stages after it are skipped (after a killed tune, propagate
runs with its default parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

STAGES = ("synth", "group", "graph", "tune", "propagate", "export", "eval")
TIMED = STAGES[1:]  # group..eval: the stages the 1M target is about
TARGET_RATIO = 1.5
TARGET_SECONDS_1M = 1800.0
TARGET_GIB = 8.0


@dataclass
class StageFigure:
    """One stage of one size: wall seconds, peak RSS (GiB), and whether it finished."""

    cuts: int
    stage: str
    seconds: float
    peak_gib: float
    finished: bool
    cpu_seconds: float = 0.0  # user + system CPU of the stage (the fair figure on a shared machine)

    @property
    def cuts_per_second(self) -> float:
        return self.cuts / self.seconds if self.seconds > 0 else float("inf")


def stage_command(stage: str, work: Path, cuts: int, seed: int) -> list[str]:
    """The ``choral`` arguments of one stage in ``work`` (the Makefile's demo-synthetic order)."""
    w = str(work)
    return {
        "synth": ["synth", w, "--cuts", str(cuts), "--seed", str(seed)],
        "group": ["group", f"{w}/decoded.jsonl.gz", f"{w}/grouped.jsonl.gz", "--force"],
        "graph": ["graph", f"{w}/grouped.jsonl.gz", f"{w}/graph.npz", "--force"],
        "tune": ["tune", f"{w}/grouped.jsonl.gz", f"{w}/graph.npz", f"{w}/params.yaml", "--force"],
        # without params.yaml (a killed tune) propagate runs with its defaults
        "propagate": ["propagate", f"{w}/grouped.jsonl.gz", f"{w}/graph.npz", f"{w}/rescored.jsonl.gz", "--force",
                      *(["--params", f"{w}/params.yaml"] if (work / "params.yaml").exists() else [])],
        "export": ["export", f"{w}/rescored.jsonl.gz", f"{w}/export", "--format", "lhotse", "--force"],
        "eval": ["eval", f"{w}/rescored.jsonl.gz", "--references", f"{w}/references.jsonl.gz",
                 "--by", "accent", "--out", f"{w}/eval", "--force"],
    }[stage]


def _peak_rss_gib(pid: int) -> float:
    """The current peak RSS (VmHWM) of a live process, in GiB (0 when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_stage(choral: list[str], args: list[str], cuts: int, stage: str, timeout: float, log: Path) -> StageFigure:
    """Run one stage as a child process; its wall time and its own peak RSS (from ``wait4``)."""
    with open(log, "ab") as out:
        out.write(f"$ {shlex.join([*choral, *args])}\n".encode())
        out.flush()
        started = time.perf_counter()
        child = subprocess.Popen([*choral, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + timeout
        peak = 0.0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _peak_rss_gib(child.pid))
            if time.perf_counter() > deadline:
                os.killpg(child.pid, signal.SIGKILL)
                _, status, usage = os.wait4(child.pid, 0)
                seconds = time.perf_counter() - started
                return StageFigure(cuts, stage, seconds, max(peak, usage.ru_maxrss / 2**20), False,
                                   usage.ru_utime + usage.ru_stime)
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{stage} at {cuts:,} cuts failed (exit {child.returncode}); see {log}")
    return StageFigure(cuts, stage, seconds, usage.ru_maxrss / 2**20, True, usage.ru_utime + usage.ru_stime)


def _table(figures: list[StageFigure]) -> str:
    lines = [f"{'cuts':>9} {'stage':<10} {'seconds':>9} {'CPU s':>8} {'cuts/s':>10} {'peak RSS GiB':>13}"]
    for f in figures:
        mark = "" if f.finished else "  (killed: unfinished)"
        lines.append(f"{f.cuts:>9,} {f.stage:<10} {f.seconds:>9.1f} {f.cpu_seconds:>8.1f} "
                     f"{f.cuts_per_second:>10,.0f} {f.peak_gib:>13.2f}{mark}")
    return "\n".join(lines)


def _ratios(figures: list[StageFigure]) -> str:
    """Cost per cut at the largest size over the smallest, per stage and for group..eval, in wall seconds and
    in CPU seconds (the fair figure when other jobs share the machine)."""
    sizes = sorted({f.cuts for f in figures})
    if len(sizes) < 2:
        return ""
    small, large = sizes[0], sizes[-1]
    by = {(f.cuts, f.stage): f for f in figures}
    lines = [f"cost per cut, {large:,} / {small:,} cuts (target <= {TARGET_RATIO}):   wall    CPU"]
    total = {small: [0.0, 0.0], large: [0.0, 0.0]}
    complete = True
    for stage in TIMED:
        a, b = by.get((small, stage)), by.get((large, stage))
        if a is None or b is None or not (a.finished and b.finished):
            complete = False
            continue
        for size, f in ((small, a), (large, b)):
            total[size][0] += f.seconds
            total[size][1] += f.cpu_seconds
        cpu = (b.cpu_seconds / large) / (a.cpu_seconds / small) if a.cpu_seconds > 0 else float("nan")
        lines.append(f"  {stage:<10} {(b.seconds / large) / (a.seconds / small):6.2f} {cpu:6.2f}")
    if complete and total[small][0] > 0:
        wall = (total[large][0] / large) / (total[small][0] / small)
        cpu = (total[large][1] / large) / (total[small][1] / small) if total[small][1] > 0 else float("nan")
        lines.append(f"  {'group..eval':<10} {wall:6.2f} {cpu:6.2f}")
    for size in sizes:
        tune, propagate = by.get((size, "tune")), by.get((size, "propagate"))
        if tune is not None and propagate is not None and propagate.cpu_seconds > 0:
            lines.append(f"tune / propagate CPU at {size:,} cuts: {tune.cpu_seconds / propagate.cpu_seconds:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/choral-scale"))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a stage is killed")
    parser.add_argument("--tune-timeout", type=float, default=None, help="seconds before tune is killed")
    parser.add_argument("--choral", default=None,
                        help="command that runs choral (default: this interpreter's choral.cli.app)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    choral = (shlex.split(args.choral) if args.choral else
              [sys.executable, "-c", "import sys; from choral.cli.app import main; sys.argv[0] = 'choral'; main()"])
    figures: list[StageFigure] = []
    for cuts in args.cuts:
        work = args.work / f"{cuts}"
        work.mkdir(parents=True, exist_ok=True)
        if "tune" in args.stages:
            (work / "params.yaml").unlink(missing_ok=True)
        log = work / "stages.log"
        for stage in args.stages:
            timeout = args.tune_timeout if stage == "tune" and args.tune_timeout is not None else args.timeout
            figure = run_stage(choral, stage_command(stage, work, cuts, args.seed), cuts, stage, timeout, log)
            figures.append(figure)
            print(_table([figure]).splitlines()[1], flush=True)
            if not figure.finished and stage != "tune":
                break
        timed = [f for f in figures if f.cuts == cuts and f.stage in TIMED]
        if timed:
            print(f"{cuts:>9,} group..eval {sum(f.seconds for f in timed):.1f} s, "
                  f"{sum(f.cpu_seconds for f in timed):.1f} CPU s, "
                  f"peak RSS {max(f.peak_gib for f in timed):.2f} GiB", flush=True)
    print()
    print(_table(figures))
    ratios = _ratios(figures)
    if ratios:
        print(ratios)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=1) + "\n")


if __name__ == "__main__":
    main()
