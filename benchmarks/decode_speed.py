"""Real-time factor of `choral decode`'s batched beam search vs per-utterance search (n-best 8, beam 8).

Measured on the committed demo set (200 cuts, 0.14 h, 5 accents) with the default
teacher, the way the decode stage runs it: features, encoder, modified beam
search, exact n-best rescoring. The peer is the same search run one utterance at
a time (what a straightforward implementation does), in the same process.

    .venv/bin/python benchmarks/decode_speed.py                  # default teacher, all 200 demo cuts
    .venv/bin/python benchmarks/decode_speed.py --teacher PATH --cuts 50
    .venv/bin/python benchmarks/decode_speed.py --threads 1 --workers 1   # + the decode stage with a loader
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "accented"))

from corpus_io import load_demo

from choral.pipeline.decode import DecodeConfig, decode_manifest
from choral.pipeline.manifest import write_cuts
from choral.pipeline.teacher import load_teacher, parameter_count, resolve_teacher
from choral.pipeline.teacher.features import batch_features


def timed(teacher, features: list, batch_seconds: float) -> float:
    """Seconds to decode all feature matrices in consecutive batches of about ``batch_seconds`` of audio."""
    started = time.perf_counter()
    batch, frames = [], 0
    for item in features:
        batch.append(item)
        frames += item.shape[0]
        if frames >= batch_seconds * 100:
            teacher.decode_features(batch)
            batch, frames = [], 0
    if batch:
        teacher.decode_features(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="default")
    parser.add_argument("--cuts", type=int, default=200, help="demo cuts to decode")
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0,
                        help="also run the decode stage (audio loading included) with 0 and this many loader "
                             "worker processes and print both RTFs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    teacher = load_teacher(resolve_teacher(args.teacher), beam=args.beam, nbest=min(8, args.beam))
    cuts = list(load_demo()[0])[: args.cuts]
    started = time.perf_counter()
    features = batch_features(cuts)
    feature_seconds = time.perf_counter() - started
    audio = sum(cut.duration for cut in cuts)
    timed(teacher, features[:4], 1e9)  # warm-up
    batched = timed(teacher, features, args.batch_seconds)
    per_utterance = timed(teacher, features, 0.0)

    print(f"teacher {args.teacher}: {parameter_count(teacher.model) / 1e6:.2f}M parameters, beam {args.beam}, "
          f"n-best {min(8, args.beam)}; {len(cuts)} demo cuts, {audio:.0f} s of audio; {args.threads} threads")
    print(f"features (fbank, both modes): {feature_seconds:.1f} s, RTF {feature_seconds / audio:.4f}")
    print(f"{'mode':<24}{'seconds':>10}{'RTF':>10}{'x real time':>14}")
    for name, seconds in ((f"batched ({args.batch_seconds:g} s)", batched), ("per-utterance (peer)", per_utterance)):
        total = seconds + feature_seconds
        print(f"{name:<24}{total:>10.1f}{total / audio:>10.4f}{audio / total:>14.1f}")
    speed_up = (per_utterance + feature_seconds) / (batched + feature_seconds)
    print(f"speed-up of batched over per-utterance: {speed_up:.2f}x")
    if args.workers:
        loader_case(cuts, args)


def loader_case(cuts: list, args: argparse.Namespace) -> None:
    """The decode stage end to end (audio, features, search, writing) without and with loader workers."""
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "cuts.jsonl.gz"
        write_cuts(cuts, manifest)
        audio = sum(cut.duration for cut in cuts)
        rows = []
        for workers in (0, args.workers):
            config = DecodeConfig(beam=args.beam, nbest=min(8, args.beam), batch_duration=args.batch_seconds,
                                  workers=workers)
            started = time.perf_counter()
            decode_manifest(manifest, Path(folder) / f"w{workers}", args.teacher, config, force=True)
            rows.append((workers, time.perf_counter() - started))
    print(f"decode stage, {args.threads} model threads: {'loader workers':<16}{'seconds':>10}{'RTF':>10}")
    for workers, seconds in rows:
        print(f"{'':<36}{workers:<16}{seconds:>10.1f}{seconds / audio:>10.4f}")
    print(f"loader workers vs in-process loading: {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
