"""Train choral's default teacher on the majority-accent split of the synthetic corpus.

Only ``teacher_train`` (US English voices) is used for training; the checkpoint
is picked by greedy WER on ``teacher_dev`` (also US English), never by the
accented data, so the accent gap stays what a majority-trained teacher shows.

    .venv/bin/python benchmarks/accented/train_teacher.py --minutes 25 \
        --out pipeline/teacher/default_teacher.pt

Features are computed once (both cores) and kept in memory; batches are
length-sorted buckets of about ``--batch-seconds`` of audio. Loss: RNN-T plus
0.3 x CTC on the encoder (without the CTC term the model sat in a
language-model-only mode in our first experiments).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from pathlib import Path

import jiwer
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_io import load_cuts  # noqa: E402

from choral.pipeline.teacher.features import cut_features  # noqa: E402
from choral.pipeline.teacher.model import Transducer, TransducerConfig, parameter_count, save_checkpoint  # noqa: E402
from choral.pipeline.teacher.search import greedy_search  # noqa: E402
from choral.pipeline.teacher.tokens import TokenTable  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def _features(cut) -> np.ndarray:
    return cut_features(cut)


def load_split(manifest: Path, tokens: TokenTable, jobs: int, limit: int | None = None
               ) -> list[tuple[np.ndarray, list[int], str]]:
    """(features, token ids, reference text) of every cut of a split (the first ``limit`` cuts if given)."""
    cuts = list(load_cuts(manifest))[:limit]
    with multiprocessing.Pool(jobs) as pool:
        features = pool.map(_features, cuts, chunksize=16)
    texts = [" ".join(s.text for s in cut.supervisions if s.text) for cut in cuts]
    return [(f, tokens.encode(t), tokens.normalizer(t)) for f, t in zip(features, texts)]


def batches(data: list, batch_seconds: float, rng: random.Random) -> list[list[int]]:
    """Length-sorted buckets of about ``batch_seconds`` of audio, in random order."""
    order = sorted(range(len(data)), key=lambda i: data[i][0].shape[0])
    out, current, frames = [], [], 0
    for index in order:
        current.append(index)
        frames += data[index][0].shape[0]
        if frames >= batch_seconds * 100:
            out.append(current)
            current, frames = [], 0
    if current:
        out.append(current)
    rng.shuffle(out)
    return out


def collate(items: list) -> tuple[torch.Tensor, ...]:
    lengths = torch.tensor([f.shape[0] for f, _, _ in items])
    features = torch.zeros(len(items), int(lengths.max()), items[0][0].shape[1])
    for row, (f, _, _) in enumerate(items):
        features[row, : f.shape[0]] = torch.from_numpy(f)
    target_lengths = torch.tensor([len(t) for _, t, _ in items])
    targets = torch.zeros(len(items), max(1, int(target_lengths.max())), dtype=torch.long)
    for row, (_, t, _) in enumerate(items):
        targets[row, : len(t)] = torch.tensor(t, dtype=torch.long)
    return features, lengths, targets, target_lengths


@torch.inference_mode()
def greedy_wer(model: Transducer, tokens: TokenTable, data: list, batch_seconds: float) -> float:
    model.eval()
    refs, hyps = [], []
    for batch in batches(data, batch_seconds, random.Random(0)):
        items = [data[i] for i in batch]
        features, lengths, _, _ = collate(items)
        encoded, enc_lengths = model.encode(features, lengths)
        for item, hyp in zip(items, greedy_search(model, encoded, enc_lengths)):
            refs.append(item[2])
            hyps.append(tokens.decode(hyp.tokens))
    model.train()
    return jiwer.wer(refs, hyps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=DATA / "teacher_train_cuts.jsonl.gz")
    parser.add_argument("--dev", type=Path, default=DATA / "teacher_dev_cuts.jsonl.gz")
    parser.add_argument("--out", type=Path, default=DATA / "teacher.pt")
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget")
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=150, help="steps between dev evaluations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only this many cuts per split (smoke test)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    tokens = TokenTable()
    started = time.perf_counter()
    train = load_split(args.train, tokens, args.threads, args.limit)
    dev = load_split(args.dev, tokens, args.threads, args.limit)
    hours = sum(f.shape[0] for f, _, _ in train) / 100 / 3600
    print(f"features: {len(train)} train cuts ({hours:.2f} h), {len(dev)} dev cuts, "
          f"{time.perf_counter() - started:.0f} s", flush=True)

    model = Transducer(TransducerConfig(vocab_size=len(tokens.symbols)))
    print(f"model: {parameter_count(model) / 1e6:.2f}M parameters", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60
    train_started = time.perf_counter()
    best_wer, step, audio_seconds = float("inf"), 0, 0.0
    done = False
    while not done:
        for batch in batches(train, args.batch_seconds, rng):
            elapsed = time.perf_counter() - train_started
            fraction = min(elapsed / budget, 1.0)
            for group in optimizer.param_groups:  # short warm-up, then cosine decay over the budget
                group["lr"] = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * fraction))
            features, lengths, targets, target_lengths = collate([train[i] for i in batch])
            loss, parts = model.loss(features, lengths, targets, target_lengths, ctc_weight=0.3)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            step += 1
            audio_seconds += float(lengths.sum()) / 100
            if step % 25 == 0:
                speed = audio_seconds / (time.perf_counter() - train_started)
                print(f"step {step:5d}  {elapsed / 60:5.1f} min  loss {float(loss.detach()):7.2f} "
                      f"(rnnt {parts['rnnt']:.2f}, ctc {parts.get('ctc', 0):.2f})  {speed:.0f}x real time",
                      flush=True)
            if step % args.eval_every == 0 or elapsed >= budget:
                wer = greedy_wer(model, tokens, dev, args.batch_seconds)
                marker = ""
                if wer < best_wer:
                    best_wer = wer
                    save_checkpoint(model, tokens, args.out)
                    marker = "  (saved)"
                print(f"step {step:5d}  dev greedy WER {100 * wer:.2f}%{marker}", flush=True)
            if elapsed >= budget:
                done = True
                break
    print(f"done: {step} steps, {(time.perf_counter() - train_started) / 60:.1f} min, "
          f"best dev WER {100 * best_wer:.2f}% -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
