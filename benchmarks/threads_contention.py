"""Decode under contention: `choral --threads N decode` against torch's own thread count (the peer).

Two cases on the committed demo set (default teacher, ``--cuts`` cuts), each in fresh processes:

- **side by side**: two decode jobs start together on the same machine;
- **beside a busy process**: one decode job next to a process that keeps one core busy.

For each case the jobs run once with no thread setting (torch sizes its pool from the machine: the
peer) and once with ``choral --threads N`` (default N = cores / jobs). Reported: wall seconds of the
slowest job and the real-time factor, median of ``--repeat`` rounds; the ratio peer / threads is the
speed-up of sharing the cores instead of oversubscribing them. The n-best lists are compared too.

    .venv/bin/python benchmarks/threads_contention.py --cuts 60 --repeat 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "accented"))

from corpus_io import load_demo

from choral.kernels.threads import available_cores
from choral.pipeline.manifest import write_cuts

CHORAL = str(Path(sys.executable).parent / "choral")


def _busy() -> subprocess.Popen:
    """A process that keeps one core busy until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _nbest(out_dir: Path) -> list:
    with gzip.open(out_dir / "decoded.jsonl.gz", "rt") as handle:
        return [[h["text"] for h in json.loads(line)["custom"]["nbest"]] for line in handle]


def _round(cuts: Path, work: Path, jobs: int, threads: int | None, busy: bool) -> tuple[float, list]:
    """Start ``jobs`` decodes together (optionally beside a busy process); the slowest one's seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    prefix = [CHORAL] + (["--threads", str(threads)] if threads else [])
    hog = _busy() if busy else None
    started = time.perf_counter()
    try:
        processes = [subprocess.Popen([*prefix, "decode", str(cuts), str(work / f"job{j}"), "--force"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
                     for j in range(jobs)]
        for process in processes:
            _, error = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"decode failed: {error.decode().strip()}")
        seconds = time.perf_counter() - started
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return seconds, _nbest(work / "job0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cuts = list(load_demo()[0])[: args.cuts]
    audio = sum(c.duration for c in cuts)
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = work / "cuts.jsonl.gz"
        write_cuts(cuts, manifest)
        print(f"{len(cuts)} demo cuts, {audio:.0f} s of audio, {cores} cores; median of {args.repeat} rounds")
        print(f"{'case':<28}{'threads':>10}{'seconds':>10}{'RTF':>8}{'peer/this':>11}")
        for case, jobs, busy in (("two jobs side by side", 2, False), ("one job beside a busy core", 1, True)):
            share = max(1, (cores - (1 if busy else 0)) // jobs)
            timings: dict[str, list[float]] = {"torch default (peer)": [], f"--threads {share}": []}
            answers = {}
            for _ in range(args.repeat):  # alternate the order, so drift hits both arms alike
                for name, threads in (("torch default (peer)", None), (f"--threads {share}", share)):
                    seconds, nbest = _round(manifest, work, jobs, threads, busy)
                    timings[name].append(seconds)
                    answers[name] = nbest
            peer = statistics.median(timings["torch default (peer)"])
            for name, values in timings.items():
                median = statistics.median(values)
                print(f"{case:<28}{name.split()[-1] if 'threads' in name else 'default':>10}{median:>10.1f}"
                      f"{median / audio:>8.3f}{peer / median:>11.2f}")
            same = len(set(json.dumps(a) for a in answers.values())) == 1
            print(f"{'':<28}n-best identical across thread settings: {same}")


if __name__ == "__main__":
    main()
