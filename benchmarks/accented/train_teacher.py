"""Train choral's default teacher on the majority-accent split of the synthetic corpus.

Only ``teacher_train`` (US English voices) is used for training; the checkpoint
is picked by greedy WER on ``teacher_dev`` (also US English), never by the
accented data, so the accent gap stays what a majority-trained teacher shows.

    .venv/bin/python benchmarks/accented/train_teacher.py --minutes 25 \
        --out pipeline/teacher/default_teacher.pt

Features are computed once (both cores), cached next to the manifest
(``<manifest>.features.npz``, reused while the manifest is unchanged) and kept in
memory; batches are length-sorted buckets of about ``--batch-seconds`` of audio.
Loss: RNN-T plus 0.3 x CTC on the encoder (without the CTC term the model sat in
a language-model-only mode in our first experiments).

Augmentation (on by default): the corpus has few voices and template prompts,
so without it the training loss reaches ~0 within half an hour while dev WER
stalls near 20%. Each batch item gets a tempo change (features resampled in
time by a factor in [0.9, 1.1]) and SpecAugment masks (2 frequency bands of up
to 15 mel bins, one time mask of up to 20 frames per second of audio).
``--init CHECKPOINT`` continues from an earlier checkpoint (the default teacher
was trained from scratch without augmentation, then continued with it).
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

from corpus_io import load_cuts

from choral.pipeline.teacher.features import cut_features
from choral.pipeline.teacher.model import (
    Transducer,
    TransducerConfig,
    load_checkpoint,
    parameter_count,
    save_checkpoint,
)
from choral.pipeline.teacher.search import greedy_search
from choral.pipeline.teacher.tokens import TokenTable

DATA = Path(__file__).resolve().parent / "data"


def _features(cut) -> np.ndarray:
    return cut_features(cut)


def cached_features(manifest: Path, cuts: list, jobs: int) -> list[np.ndarray]:
    """Features of ``cuts``, from ``<manifest>.features.npz`` when it matches their ids and is newer."""
    cache = manifest.with_name(manifest.name + ".features.npz")
    ids = [cut.id for cut in cuts]
    if cache.is_file() and cache.stat().st_mtime >= manifest.stat().st_mtime:
        with np.load(cache) as stored:
            if list(stored["ids"]) == ids:
                lengths = stored["lengths"]
                flat = stored["features"].astype(np.float32)
                return np.split(flat, np.cumsum(lengths)[:-1])
    with multiprocessing.Pool(jobs) as pool:
        features = pool.map(_features, cuts, chunksize=16)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(tmp, ids=np.array(ids), lengths=np.array([f.shape[0] for f in features]),
             features=np.concatenate(features).astype(np.float16))
    tmp.replace(cache)
    return features


def load_split(manifest: Path, tokens: TokenTable, jobs: int, limit: int | None = None
               ) -> list[tuple[np.ndarray, list[int], str]]:
    """(features, token ids, reference text) of every cut of a split (the first ``limit`` cuts if given)."""
    cuts = list(load_cuts(manifest))
    if limit is None:
        features = cached_features(manifest, cuts, jobs)
    else:
        cuts = cuts[:limit]
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


def augment(features: np.ndarray, rng: random.Random) -> np.ndarray:
    """Tempo change by resampling frames in time (factor 0.9-1.1), then SpecAugment band and time masks."""
    frames, bins = features.shape
    rate = rng.uniform(0.9, 1.1)
    new_frames = max(8, int(round(frames / rate)))
    positions = np.linspace(0, frames - 1, new_frames)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, frames - 1)
    weight = (positions - low)[:, None].astype(np.float32)
    out = features[low] * (1 - weight) + features[high] * weight
    for _ in range(2):
        width = rng.randint(0, 15)
        start = rng.randint(0, bins - width)
        out[:, start:start + width] = 0.0
    for _ in range(new_frames // 100):
        width = rng.randint(0, min(20, new_frames // 10))
        start = rng.randint(0, new_frames - width)
        out[start:start + width] = 0.0
    return out.astype(np.float32)


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
    parser.add_argument("--init", type=Path, default=None, help="continue from this checkpoint")
    parser.add_argument("--no-augment", action="store_true", help="train on clean features only")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps")
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

    if args.init is not None:
        model, tokens = load_checkpoint(args.init)
        model.train()
        print(f"continuing from {args.init}", flush=True)
    else:
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
                warm = min(1.0, (step + 1) / max(1, args.warmup))
                group["lr"] = args.lr * warm * 0.5 * (1 + np.cos(np.pi * fraction))
            items = [train[i] for i in batch]
            if not args.no_augment:
                items = [(augment(f, rng), t, r) for f, t, r in items]
            features, lengths, targets, target_lengths = collate(items)
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
