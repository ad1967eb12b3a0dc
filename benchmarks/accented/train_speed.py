"""Training cost of the teacher architectures, measured on generated audio (the corpus need not be built).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/accented/train_speed.py --threads 1

For ``char`` and ``stateless`` at the same ``--batch-seconds``: seconds per optimizer
step, seconds of training per hour of audio (one pass over an hour), greedy dev
decoding cost, parameters and checkpoint size. Texts are the real ``teacher_train``
prompts (from ``make_corpus.py``'s plan, so the sentencepiece vocabulary and the
target lengths are the real ones); the audio is gliding tones of the length the
corpus gives such a text (2.74 s for the mean 37.5 characters). A step's cost depends
only on the shapes (frames, target length, vocabulary), not on what the audio says.
Augmentation is on, as in training.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_corpus
import train_teacher as tt
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from choral.pipeline.teacher.bpe import train_bpe_model
from choral.pipeline.teacher.model import parameter_count
from choral.pipeline.teacher.tokens import TokenTable

SECONDS_PER_CHARACTER = 3.66 * 3600 / 4800 / 37.5  # teacher_train: 3.66 h, 4,800 cuts, 37.5 characters a cut


def tone(seconds: float, seed: int) -> np.ndarray:
    """Tones gliding in pitch, switched on and off, over noise, at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    glide = rng.uniform(150, 400) * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    phase = 2 * np.pi * np.cumsum(glide) / 16_000
    gate = (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > -0.3).astype(float)
    audio = gate * (0.3 * np.sin(phase) + 0.1 * np.sin(3 * phase)) + rng.uniform(0.005, 0.05) * rng.standard_normal(
        t.size)
    return audio.astype(np.float32)


def write_tone_corpus(folder: Path, name: str, texts: Sequence[str], durations: Sequence[float],
                      seed: int = 0) -> Path:
    """A miniature corpus in the layout ``corpus_io.load_cuts`` reads: one FLAC per text, one supervision per
    cut; returns the manifest ``<folder>/<name>_cuts.jsonl.gz``."""
    audio_dir = folder / f"{name}_audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    cuts = []
    for i, (text, seconds) in enumerate(zip(texts, durations)):
        cut_id = f"{name}-{i:05d}"
        path = audio_dir / f"{cut_id}.flac"
        sf.write(path, tone(seconds, seed * 100_003 + i), 16_000)
        recording = Recording.from_file(path, recording_id=cut_id)
        supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=recording.duration,
                                         text=text, speaker="tone")
        cuts.append(MonoCut(id=cut_id, start=0.0, duration=recording.duration, channel=0, recording=recording,
                            supervisions=[supervision]))
    manifest = folder / f"{name}_cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(manifest)
    return manifest


def training_texts() -> list[str]:
    """The ``teacher_train`` transcripts ``make corpus`` synthesises (default seed and sizes)."""
    args = make_corpus.parse_args([])
    plan = make_corpus.plan_full(args.seed, args.pool_prompts, args.dev_prompts, args.train_prompts,
                                 args.train_readings, args.dev_readings)
    return [item.prompt.text for item in plan if item.split == "teacher_train"]


def make_run(arch: str, tokens: TokenTable, manifest: Path, args: argparse.Namespace) -> tt.Run:
    """A fresh run of ``arch`` with the default sizes; both architectures get the same batches (same seed)."""
    data, digest = tt.load_split(manifest, tokens, 1, tt.raw_features(arch), limit=args.cuts)
    recipe = {**tt.RECIPE_DEFAULTS, "arch": arch, "batch_seconds": args.batch_seconds, "steps": 10_000}
    torch.manual_seed(0)
    return tt.Run(recipe, tt.build_model(arch, len(tokens), {}), tokens, data, data[: args.dev_cuts], digest,
                  torch.device("cpu"))


def measure(runs: dict[str, tt.Run], args: argparse.Namespace, out: Path) -> list[dict]:
    """Time ``args.steps`` training steps per run (after ``args.warm`` untimed ones), the runs' steps taken in
    turn so that both meet the same load on a shared machine; then greedy dev passes (the faster of two)."""
    times: dict[str, list[float]] = {arch: [] for arch in runs}
    audio: dict[str, float] = {arch: 0.0 for arch in runs}
    for step in range(args.warm + args.steps):
        for arch, run in runs.items():
            started = time.perf_counter()
            _, _, seconds = run.train_step()
            if step >= args.warm:
                times[arch].append(time.perf_counter() - started)
                audio[arch] += seconds
    greedy: dict[str, list[float]] = {arch: [] for arch in runs}
    for _ in range(2):
        for arch, run in runs.items():
            started = time.perf_counter()
            tt.greedy_wer(run.model, run.tokens, run.dev, args.batch_seconds)
            greedy[arch].append(time.perf_counter() - started)
    rows = []
    for arch, run in runs.items():
        path = out / f"{arch}.pt"
        tt.save_model(run.model, run.tokens, path)
        dev_audio = sum(f.shape[0] for f, _, _ in run.dev) / 100
        total = sum(times[arch])
        rows.append({"arch": arch, "symbols": len(run.tokens), "targets": np.mean([len(t) for _, t, _ in run.train]),
                     "parameters": parameter_count(run.model), "step": total / args.steps,
                     "median": float(np.median(times[arch])), "audio_per_step": audio[arch] / args.steps,
                     "per_hour": total / (audio[arch] / 3600),
                     "greedy_per_hour": min(greedy[arch]) / (dev_audio / 3600),
                     "megabytes": path.stat().st_size / 2**20})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=400, help="generated cuts (texts drawn from teacher_train)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per architecture")
    parser.add_argument("--warm", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--bpe-vocab", type=int, default=tt.RECIPE_DEFAULTS["bpe_vocab"])
    parser.add_argument("--dev-cuts", type=int, default=120, help="cuts decoded greedily (dev evaluation cost)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    texts = training_texts()
    chosen = random.Random(0).sample(texts, args.cuts)
    characters = TokenTable()
    durations = [SECONDS_PER_CHARACTER * len(characters.encode(t)) for t in chosen]
    pieces = train_bpe_model(texts, args.bpe_vocab)  # the real vocabulary: all 4,800 training transcripts
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = write_tone_corpus(folder, "speed", chosen, durations)
        print(f"{args.cuts} generated cuts, {sum(durations) / 60:.1f} min of audio; batches of "
              f"{args.batch_seconds:g} s; {args.threads} thread(s); {args.warm} warm-up + {args.steps} timed steps")
        runs = {"char": make_run("char", characters, manifest, args),
                "stateless": make_run("stateless", pieces, manifest, args)}
        rows = measure(runs, args, folder)
    print(f"{'arch':10s} {'symbols':>7s} {'targets/cut':>11s} {'params':>7s} {'s/step':>7s} {'median':>7s} "
          f"{'audio/step':>10s} {'train s/h audio':>15s} {'greedy s/h audio':>16s} {'checkpoint':>10s}")
    for r in rows:
        print(f"{r['arch']:10s} {r['symbols']:7d} {r['targets']:11.1f} {r['parameters'] / 1e6:6.2f}M "
              f"{r['step']:7.2f} {r['median']:7.2f} {r['audio_per_step']:9.1f}s {r['per_hour']:15.0f} "
              f"{r['greedy_per_hour']:16.1f} {r['megabytes']:8.2f}MB")


if __name__ == "__main__":
    main()
