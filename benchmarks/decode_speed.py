"""Real-time factor of batched vs per-utterance modified beam search (n-best 8, beam 8).

Uses a random teacher of the intended size (about 3M parameters) on generated
audio (tones with noise), so it measures the search machinery, not accuracy. An
untrained teacher emits a label at almost every frame, which makes the predictor
work harder than a trained one would (trained teachers mostly emit blank), so
absolute RTFs are pessimistic; the ratio is what this benchmark is for.

    .venv/bin/python benchmarks/decode_speed.py --utterances 16 --min-seconds 2 --max-seconds 6
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from choral.pipeline.teacher import TransducerConfig, TransducerTeacher, parameter_count
from choral.pipeline.teacher.features import SAMPLING_RATE, fbank
from choral.pipeline.teacher.search import modified_beam_search


def generated_features(n: int, low: float, high: float, seed: int) -> tuple[list[np.ndarray], float]:
    """Features of ``n`` tone-plus-noise utterances of random length; also their total seconds."""
    rng = np.random.default_rng(seed)
    features, total = [], 0.0
    for _ in range(n):
        seconds = float(rng.uniform(low, high))
        t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) + 0.02 * rng.standard_normal(t.size)
        features.append(fbank(audio.astype(np.float32)))
        total += seconds
    return features, total


def timed(teacher: TransducerTeacher, features: list[np.ndarray], batch: int, beam: int) -> float:
    """Seconds to encode and beam-search all utterances, ``batch`` at a time."""
    started = time.perf_counter()
    for begin in range(0, len(features), batch):
        encoded, lengths = teacher.encode_features(features[begin: begin + batch])
        modified_beam_search(teacher.model, encoded, lengths, beam)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=6.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    teacher = TransducerTeacher.random(TransducerConfig(), seed=0, beam=args.beam, nbest=min(8, args.beam))
    features, audio_seconds = generated_features(args.utterances, args.min_seconds, args.max_seconds, seed=0)
    timed(teacher, features[:2], 2, args.beam)  # warm-up
    per_utterance = timed(teacher, features, 1, args.beam)
    batched = timed(teacher, features, args.batch, args.beam)

    print(f"teacher: {parameter_count(teacher.model) / 1e6:.2f}M parameters, beam {args.beam}, n-best "
          f"{min(8, args.beam)}; {args.utterances} utterances, {audio_seconds:.1f} s of audio; "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'mode':<16}{'seconds':>10}{'RTF':>10}")
    print(f"{'per-utterance':<16}{per_utterance:>10.2f}{per_utterance / audio_seconds:>10.3f}")
    print(f"{f'batched ({args.batch})':<16}{batched:>10.2f}{batched / audio_seconds:>10.3f}")
    print(f"speed-up (per-utterance / batched): {per_utterance / batched:.2f}x")


if __name__ == "__main__":
    main()
