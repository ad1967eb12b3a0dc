"""Soak run: ``choral run`` killed at random moments (SIGKILL or SIGTERM), then run to the end.

A small project is generated (tones in an audio folder, Kaldi-text annotations for some, lhotse
references for all, a small random teacher checkpoint): a clean run gives the reference outputs.
Then, in the same run directory after removing it and running once more, ``--runs`` times: start
``choral run --force`` (every stage works again), kill it after a random delay within the clean run's
duration (SIGKILL or SIGTERM, seeded), and run ``choral run`` to the end. After a SIGTERM, no temporary
file may be left and the exit code must be 143 (or -15 when the signal came before choral had started);
after every rerun, the outputs must be byte-identical to the clean run's (every file but ``run.json``,
the ``.meta.json`` sidecars, which hold mtimes, and ``.lock``) and no stray file may be left.
Reported: kills of each kind, stray temporary files seen after SIGKILLs, and the problems found.

Usage: ``python benchmarks/soak_kill.py [--runs 20] [--cuts 200] [--seed 0] [--work /tmp/choral-soak]``;
``--config configs/demo.yaml`` soaks that run config instead (the demo set with the default teacher), its run
directory placed under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import SupervisionSegment

from choral.pipeline.teacher import TransducerConfig, TransducerTeacher, save_teacher

PROMPTS = ["the cat sat on the mat", "the cat ran to the mat", "a dog sat on the rug", "a dog ran to the rug"]
# about a third of the default teacher's size: a clean run of the default project takes some 20 s on 2 cores
SMALL = TransducerConfig(conv_channels=16, encoder_input=128, encoder_hidden=96, encoder_layers=2, embedding_dim=64,
                         predictor_hidden=128, joiner_dim=128, dropout=0.0)


def make_project(root: Path, n_cuts: int, n_annotated: int) -> Path:
    """Tones in two speaker folders (cuts of one prompt share their audio), annotations, references, config."""
    texts = {}
    for i in range(n_cuts):
        cut_id, prompt = f"spk{1 + i % 2}-u{i:02d}", i % len(PROMPTS)
        path = root / "audio" / f"spk{1 + i % 2}" / f"u{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int((1.0 + 0.3 * prompt) * 16_000)) / 16_000
        noise = np.random.default_rng(prompt).standard_normal(t.size)
        sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 60 * prompt) * t) + 0.01 * noise).astype(np.float32), 16_000)
        texts[cut_id] = PROMPTS[prompt]
    ids = sorted(texts)
    (root / "text").write_text("".join(f"{i} {texts[i]}\n" for i in ids[:n_annotated]))
    with (root / "references.jsonl").open("w") as handle:
        for k, cut_id in enumerate(ids):
            handle.write(json.dumps(SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=1.0,
                                                       text=texts[cut_id], custom={"accent": "ab"[k % 2]}).to_dict())
                         + "\n")
    save_teacher(TransducerTeacher.random(SMALL, seed=3), root / "teacher.pt")
    config = root / "run.yaml"
    config.write_text("run_dir: run\ninput:\n  audio_dir: audio\n  annotations: text\n"
                      "decode:\n  teacher: teacher.pt\n  nbest: 4\n  beam: 4\n  batch_duration: 8\n"
                      "tune:\n  folds: 2\n  alpha: [0.5, 0.9]\n  fusion_weight: [0.1, 0.3]\n  temperature: [1.0]\n"
                      "  threshold_scale: [1.0]\n"
                      "eval:\n  references: references.jsonl\n  by: [accent]\n")
    return config


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".lock") and not p.name.endswith(".meta.json")}


def strays(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if ".tmp." in p.name or ".old." in p.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/choral-soak"))
    parser.add_argument("--config", type=Path, default=None,
                        help="Soak this run config (e.g. configs/demo.yaml) instead of a generated project.")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    run_dir = args.work / "run"
    if args.config is None:
        config = make_project(args.work, args.cuts, args.cuts // 4)
        choral = [str(Path(sys.executable).parent / "choral"), "run", str(config)]
    else:
        choral = [str(Path(sys.executable).parent / "choral"), "run", str(args.config.resolve()),
                  "--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    started = time.perf_counter()
    subprocess.run(choral, check=True, capture_output=True, env=env)
    clean_seconds = time.perf_counter() - started
    reference = outputs(run_dir)
    shutil.rmtree(run_dir)
    print(f"clean run: {clean_seconds:.1f} s, {len(reference)} output files", flush=True)

    rng = random.Random(args.seed)
    kills = {"SIGKILL": 0, "SIGTERM": 0, "finished first": 0}
    killed_strays = 0
    problems = []
    subprocess.run(choral, check=True, capture_output=True, env=env)
    for index in range(args.runs):
        kind = rng.choice([signal.SIGKILL, signal.SIGTERM])
        delay = rng.uniform(0.2, clean_seconds)
        # --force: every stage does its work again, so the kill lands anywhere in the pipeline
        process = subprocess.Popen([*choral, "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, env=env)
        try:
            process.wait(timeout=delay)
            kills["finished first"] += 1
        except subprocess.TimeoutExpired:
            process.send_signal(kind)
            process.wait()
            kills[kind.name] += 1
            if kind == signal.SIGTERM:
                if process.returncode not in (143, -signal.SIGTERM):
                    problems.append(f"run {index}: SIGTERM gave exit {process.returncode}")
                if strays(run_dir):
                    problems.append(f"run {index}: SIGTERM left {strays(run_dir)}")
            else:
                killed_strays += len(strays(run_dir))
        rerun = subprocess.run(choral, capture_output=True, text=True, env=env)
        finished = outputs(run_dir)
        differ = sorted(name for name in set(reference) | set(finished) if reference.get(name) != finished.get(name))
        if rerun.returncode != 0:
            problems.append(f"run {index}: the rerun failed: {rerun.stderr.strip()}")
        if differ:
            problems.append(f"run {index}: outputs differ from the clean run's: {differ}")
        if strays(run_dir):
            problems.append(f"run {index}: stray files after the rerun: {strays(run_dir)}")
        print(f"run {index:2d}: {kind.name} at {delay:5.1f} s -> exit {process.returncode}; rerun exit "
              f"{rerun.returncode}, outputs {'same' if not differ else 'DIFFER'}", flush=True)
    print(f"kills: {kills}; stray temporary files seen after SIGKILLs (removed by the rerun): {killed_strays}")
    print(f"problems: {len(problems)}")
    for problem in problems:
        print("PROBLEM:", problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
