"""Train a choral teacher on the majority-accent split of the synthetic corpus; resumable.

Only ``teacher_train`` (US English voices) is used for training; the checkpoint
is picked by greedy WER on ``teacher_dev`` (also US English), never by the
accented data, so the accent gap stays what a majority-trained teacher shows.

Two architectures (``--arch``):

- ``stateless`` (the default, and the shipped default teacher's):
  :class:`~choral.pipeline.teacher.stateless.StatelessTransducer` in icefall's conventions
  (stateless decoder with context 2, raw log-mel fbank in, normalisation inside the encoder)
  over a sentencepiece BPE vocabulary trained here on the ``teacher_train`` transcripts only
  (``--bpe-vocab`` pieces at most, 80 by default; saved as ``<out stem>.bpe.model`` beside the
  checkpoint and inside it);
- ``char`` (the default teacher until issue 13): :class:`~choral.pipeline.teacher.model.Transducer`,
  characters, LSTM predictor, features normalised per utterance before the model.

Features are computed once, cached next to the manifest and kept in memory:
``<manifest>.features.npz`` holds the normalised ones (char), ``<manifest>.logmel.npz``
the raw log-mel ones (stateless); a cache is reused while the manifest is unchanged.
Batches are length-sorted buckets of about ``--batch-seconds`` of audio.
Loss: RNN-T plus 0.3 x CTC on the encoder (without the CTC term the character
model sat in a language-model-only mode in our first experiments).

Augmentation (on by default): the corpus has few voices and template prompts,
so without it the training loss reaches ~0 within half an hour while dev WER
stalls near 20%. Each batch item gets a tempo change (features resampled in
time by a factor in [0.9, 1.1]) and SpecAugment masks (2 frequency bands of up
to 15 mel bins, one time mask of up to 20 frames per second of audio). Masks are
filled with the utterance's per-bin mean: 0 for normalised features, and for raw
log-mel the value the encoder's normalisation maps to 0, so both models see the same masks.

Learning rate: AdamW, linear warm-up over ``--warmup`` steps, then cosine decay to 0
over ``--steps`` optimizer steps, or, without ``--steps``, over ``--minutes`` of training
time (how the shipped character checkpoint was made).

Resuming (sessions are killed): the training state (model, optimizer, schedule,
step, position in the epoch, random generators, best dev WER) is written atomically
to ``--state`` (default ``<out stem>.state.pt``) every ``--checkpoint-every`` steps,
every ``--checkpoint-minutes`` minutes, after each dev evaluation and when an
invocation ends. ``--resume`` continues from it exactly where it stopped (same
batches, same augmentation); ``--minutes`` and ``--stop-after-steps`` bound one
invocation. The recipe (architecture, sizes, learning rate, schedule, ...) is the
stored one: a recipe option given with ``--resume`` must agree with it.

    .venv/bin/python benchmarks/accented/train_teacher.py --steps 3000 --minutes 170 --no-augment \\
        --init-encoder CHAR.pt --out benchmarks/accented/data/stateless.pt
    .venv/bin/python benchmarks/accented/train_teacher.py --resume --minutes 170 \\
        --out benchmarks/accented/data/stateless.pt

``--init CHECKPOINT`` starts a new run from an earlier checkpoint's weights (both default
teachers were trained without augmentation first, then continued with it); ``--init-encoder``
starts a stateless model's encoder from a character checkpoint's (README.md here: how the
shipped teacher was made).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import multiprocessing
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jiwer
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_io import load_cuts

from choral.pipeline.errors import ChoralError
from choral.pipeline.manifest import atomic_output
from choral.pipeline.teacher.bpe import SentencePieceTable, train_bpe_model
from choral.pipeline.teacher.features import cut_features
from choral.pipeline.teacher.model import (
    Transducer,
    TransducerConfig,
    load_checkpoint,
    parameter_count,
    save_checkpoint,
)
from choral.pipeline.teacher.search import greedy_search
from choral.pipeline.teacher.stateless import (
    StatelessConfig,
    StatelessDecodable,
    StatelessTransducer,
    load_stateless,
    save_stateless,
)
from choral.pipeline.teacher.tokens import TokenTable

DATA = Path(__file__).resolve().parent / "data"
ARCHS = ("char", "stateless")
STATE_FORMAT = "choral-teacher-training-state-1"
# Recipe options: stored in the training state; with --resume they default to the stored values.
RECIPE_DEFAULTS: dict[str, Any] = {
    "arch": "stateless", "lr": 2e-3, "warmup": 100, "batch_seconds": 60.0, "seed": 0, "augment": True,
    "bpe_vocab": 80, "noise": 0.0, "steps": None, "ctc_weight": 0.3, "model_config": {}, "freeze_encoder_steps": 0,
}

NOISE_SNR_DB = (5.0, 30.0)  # --noise: white noise at an SNR drawn uniformly from this range (dB)
Item = tuple[np.ndarray, list[int], str]  # features, token ids, normalised reference


class TrainingError(Exception):
    """A problem with the inputs or the training state, reported in one line."""


# --- data ------------------------------------------------------------------------------------


def raw_features(arch: str) -> bool:
    """Whether ``arch`` takes raw log-mel fbank (it normalises inside) rather than normalised features."""
    return arch == "stateless"


def feature_cache(manifest: Path, raw: bool) -> Path:
    """Where a split's features are cached: one file per kind, next to the manifest."""
    return manifest.with_name(manifest.name + (".logmel.npz" if raw else ".features.npz"))


def compute_features(cuts: Sequence, jobs: int, raw: bool) -> list[np.ndarray]:
    """Features of ``cuts`` (raw log-mel or normalised), on ``jobs`` processes."""
    extract = functools.partial(cut_features, normalize=not raw)
    if jobs <= 1:
        return [extract(cut) for cut in cuts]
    with multiprocessing.Pool(jobs) as pool:
        return pool.map(extract, cuts, chunksize=16)


def cached_features(manifest: Path, cuts: Sequence, jobs: int, raw: bool) -> list[np.ndarray]:
    """Features of ``cuts``, from the cache when it matches their ids and kind and is newer than the manifest."""
    cache = feature_cache(manifest, raw)
    ids = [cut.id for cut in cuts]
    if cache.is_file() and cache.stat().st_mtime >= manifest.stat().st_mtime:
        with np.load(cache) as stored:
            normalized = bool(stored["normalized"]) if "normalized" in stored.files else True
            if list(stored["ids"]) == ids and normalized == (not raw):
                lengths = stored["lengths"]
                flat = stored["features"].astype(np.float32)
                return np.split(flat, np.cumsum(lengths)[:-1])
    features = compute_features(cuts, jobs, raw)
    flat = np.concatenate(features).astype(np.float16)
    lengths = np.array([f.shape[0] for f in features])
    with atomic_output(cache) as tmp:
        with tmp.open("wb") as stream:
            np.savez(stream, ids=np.array(ids), lengths=lengths, features=flat, normalized=np.array(not raw))
    # what a later run reads back, so a resumed run trains on the same numbers
    return np.split(flat.astype(np.float32), np.cumsum(lengths)[:-1])


def split_texts(cuts: Sequence) -> list[str]:
    """The transcript of each cut (its supervisions' texts joined)."""
    return [" ".join(s.text for s in cut.supervisions if s.text) for cut in cuts]


def load_split(manifest: Path, tokens: TokenTable, jobs: int, raw: bool, limit: int | None = None
               ) -> tuple[list[Item], str]:
    """(features, token ids, reference text) of every cut of a split (the first ``limit`` cuts if given), and a
    digest of its cut ids and transcripts (a resumed run checks it is training on the same data)."""
    if not manifest.is_file():
        raise TrainingError(f"{manifest}: manifest not found (run `make corpus` first)")
    cuts = list(load_cuts(manifest))
    if limit is not None:
        cuts = cuts[:limit]
        features = compute_features(cuts, jobs, raw)
    else:
        features = cached_features(manifest, cuts, jobs, raw)
    texts = split_texts(cuts)
    digest = hashlib.sha256(json.dumps([[c.id, t] for c, t in zip(cuts, texts)]).encode()).hexdigest()
    return [(f, tokens.encode(t), tokens.normalizer(t)) for f, t in zip(features, texts)], digest


def batches(data: Sequence[Item], batch_seconds: float, rng: random.Random) -> list[list[int]]:
    """Length-sorted buckets of about ``batch_seconds`` of audio, in random order."""
    order = sorted(range(len(data)), key=lambda i: data[i][0].shape[0])
    out: list[list[int]] = []
    current: list[int] = []
    frames = 0
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
    """Tempo change by resampling frames in time (factor 0.9-1.1), then SpecAugment band and time masks
    filled with the per-bin mean (0 for normalised features)."""
    frames, bins = features.shape
    rate = rng.uniform(0.9, 1.1)
    new_frames = max(8, int(round(frames / rate)))
    positions = np.linspace(0, frames - 1, new_frames)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, frames - 1)
    weight = (positions - low)[:, None].astype(np.float32)
    out = features[low] * (1 - weight) + features[high] * weight
    fill = out.mean(axis=0)
    for _ in range(2):
        width = rng.randint(0, 15)
        start = rng.randint(0, bins - width)
        out[:, start:start + width] = fill[start:start + width]
    for _ in range(new_frames // 100):
        width = rng.randint(0, min(20, new_frames // 10))
        start = rng.randint(0, new_frames - width)
        out[start:start + width] = fill
    return out.astype(np.float32)


@functools.lru_cache(maxsize=1)
def white_noise_log_mel() -> np.ndarray:
    """Mean log-mel power ``(mel,)`` of unit-variance white noise, through the same fbank as the features."""
    from choral.pipeline.teacher.features import log_mel

    noise = np.random.default_rng(0).standard_normal(16_000 * 10).astype(np.float32)
    return np.log(np.exp(log_mel(noise)).mean(axis=0)).astype(np.float32)


def add_noise(features: np.ndarray, snr_db: float) -> np.ndarray:
    """Raw log-mel ``features`` with white noise added at ``snr_db`` (mel-power SNR over the utterance):

        x'[t, m] = log(exp(x[t, m]) + g exp(n[m])),   g = mean_t,m exp(x) / (mean_m exp(n) 10^(snr / 10))

    with ``n`` the noise's mean log-mel power (:func:`white_noise_log_mel`): noise adds to speech in the power
    domain, so this is what the fbank of the noisy waveform gives, up to the noise's frame-to-frame spread.
    """
    noise = white_noise_log_mel()
    gain = np.exp(features).mean() / (np.exp(noise).mean() * 10 ** (snr_db / 10))
    return np.logaddexp(features, np.log(gain) + noise[None, :]).astype(np.float32)


def collate(items: Sequence[Item]) -> tuple[torch.Tensor, ...]:
    """Zero-padded features ``(B, T, mel)``, their lengths, padded targets ``(B, U)`` and target lengths."""
    lengths = torch.tensor([f.shape[0] for f, _, _ in items])
    features = torch.zeros(len(items), int(lengths.max()), items[0][0].shape[1])
    for row, (f, _, _) in enumerate(items):
        features[row, : f.shape[0]] = torch.from_numpy(f)
    target_lengths = torch.tensor([len(t) for _, t, _ in items])
    targets = torch.zeros(len(items), max(1, int(target_lengths.max())), dtype=torch.long)
    for row, (_, t, _) in enumerate(items):
        targets[row, : len(t)] = torch.tensor(t, dtype=torch.long)
    return features, lengths, targets, target_lengths


# --- models ----------------------------------------------------------------------------------

Model = Transducer | StatelessTransducer


def build_model(arch: str, vocab_size: int, overrides: dict[str, Any]) -> Model:
    """A fresh model of ``arch`` with the default sizes, changed by ``overrides`` (config field -> value)."""
    try:
        if arch == "stateless":
            return StatelessTransducer(StatelessConfig(**{**overrides, "vocab_size": vocab_size}))
        return Transducer(TransducerConfig(**{**overrides, "vocab_size": vocab_size}))
    except (TypeError, ValueError) as error:
        raise TrainingError(f"bad --model-config for {arch}: {error}") from None


def tokens_payload(tokens: TokenTable) -> Any:
    """What the state stores of a vocabulary: the sentencepiece model's bytes, or the character list."""
    return tokens.model_bytes if isinstance(tokens, SentencePieceTable) else tokens.to_list()


def tokens_from_payload(arch: str, payload: Any) -> TokenTable:
    return SentencePieceTable.from_model(payload, "training state") if arch == "stateless" \
        else TokenTable.from_list(payload)


def bpe_path(out: Path) -> Path:
    """Where the sentencepiece model is written beside the checkpoint ``out``."""
    return out.with_name(out.stem + ".bpe.model")


def save_model(model: Model, tokens: TokenTable, out: Path) -> None:
    """The checkpoint choral's teacher backends open (``stateless`` or ``checkpoint``), written atomically."""
    if isinstance(model, StatelessTransducer):
        assert isinstance(tokens, SentencePieceTable)
        save_stateless(model, tokens, out)
    else:
        save_checkpoint(model, tokens, out)


def load_init(arch: str, path: Path) -> tuple[Model, TokenTable]:
    """Weights and vocabulary of an earlier checkpoint of ``arch`` (``--init``)."""
    model: Model
    tokens: TokenTable
    if arch == "stateless":
        model, tokens = load_stateless(path)
    else:
        model, tokens = load_checkpoint(path)
    return model.train(), tokens


ENCODER_NAMES = {"conv1": "encoder.conv1", "conv2": "encoder.conv2", "subsample_proj": "encoder.subsample_proj",
                 "encoder": "encoder.lstm"}


def encoder_parameters(model: Model) -> list[torch.nn.Parameter]:
    """The parameters ``--freeze-encoder-steps`` holds still (those ``--init-encoder`` copies)."""
    if isinstance(model, StatelessTransducer):
        return list(model.encoder.parameters())
    return [p for name, p in model.named_parameters() if name.partition(".")[0] in ENCODER_NAMES]


def copy_encoder(path: Path, model: Model) -> None:
    """Load a character checkpoint's encoder weights into a stateless ``model`` (``--init-encoder``).

    The character model normalises fbank per utterance before its encoder; the stateless
    one does the same inside, so the copied weights see the same inputs.
    """
    if not isinstance(model, StatelessTransducer):
        raise TrainingError("--init-encoder needs --arch stateless")
    source, _ = load_checkpoint(path)
    state = model.state_dict()
    copied = 0
    for name, tensor in source.state_dict().items():
        prefix, _, rest = name.partition(".")
        if prefix not in ENCODER_NAMES:
            continue
        target = f"{ENCODER_NAMES[prefix]}.{rest}"
        if target not in state or state[target].shape != tensor.shape:
            raise TrainingError(f"{path}: encoder parameter {name} {tuple(tensor.shape)} does not fit {target}")
        state[target] = tensor
        copied += 1
    if copied == 0:
        raise TrainingError(f"{path}: no encoder parameters to copy")
    model.load_state_dict(state)


def decodable(model: Model) -> Any:
    """What greedy search drives: the character model itself, the stateless one through its adapter."""
    return StatelessDecodable(model) if isinstance(model, StatelessTransducer) else model


@torch.inference_mode()
def greedy_wer(model: Model, tokens: TokenTable, data: Sequence[Item], batch_seconds: float,
               device: torch.device = torch.device("cpu")) -> float:
    """Word error rate of greedy search on ``data`` (the model is left in training mode)."""
    model.eval()
    refs, hyps = [], []
    try:
        for batch in batches(data, batch_seconds, random.Random(0)):
            items = [data[i] for i in batch]
            features, lengths, _, _ = collate(items)
            encoded, enc_lengths = model.encode(features.to(device), lengths.to(device))
            for item, hyp in zip(items, greedy_search(decodable(model), encoded, enc_lengths)):
                refs.append(item[2])
                hyps.append(tokens.decode(hyp.tokens) or "<empty>")
    finally:
        model.train()
    return jiwer.wer(refs, hyps)


# --- schedule and state ----------------------------------------------------------------------


@dataclass
class Schedule:
    """Warm-up then cosine decay, over optimizer steps (``total_steps``) or training seconds (``total_seconds``).

    ``lr(step, seconds) = peak * min(1, (step + 1) / warmup) * (1 + cos(pi * progress)) / 2`` with
    ``progress = min(1, step / total_steps)`` (or ``seconds / total_seconds``).
    """

    peak: float
    warmup: int
    total_steps: int | None = None
    total_seconds: float | None = None

    def lr(self, step: int, seconds: float) -> float:
        if self.total_steps is not None:
            progress = step / self.total_steps
        else:
            assert self.total_seconds is not None
            progress = seconds / self.total_seconds
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        return self.peak * warm * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def finished(self, step: int, seconds: float) -> bool:
        if self.total_steps is not None:
            return step >= self.total_steps
        assert self.total_seconds is not None
        return seconds >= self.total_seconds

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """Where a run stands: what a resumed run needs besides the weights and the optimizer."""

    step: int = 0
    seconds: float = 0.0  # training time so far, all invocations (the time schedule's clock)
    audio_seconds: float = 0.0
    epoch: int = 0
    epoch_batches: list[list[int]] = field(default_factory=list)
    position: int = 0  # batches of the epoch already trained on
    best_wer: float = float("inf")
    best_step: int = 0
    last_eval_step: int = -1
    last_loss: float = float("nan")


class Run:
    """One training run: model, optimizer, schedule, data and progress; ``train_step`` does one update."""

    def __init__(self, recipe: dict[str, Any], model: Model, tokens: TokenTable, train: list[Item],
                 dev: list[Item], train_digest: str, device: torch.device) -> None:
        self.recipe = recipe
        self.model = model.to(device).train()
        self.tokens = tokens
        self.train = train
        self.dev = dev
        self.train_digest = train_digest
        self.device = device
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=recipe["lr"], weight_decay=1e-4)
        steps = recipe["steps"]
        self.schedule = Schedule(recipe["lr"], recipe["warmup"], steps,
                                 None if steps else 60.0 * recipe["schedule_minutes"])
        self.rng = random.Random(recipe["seed"])
        self.progress = Progress()

    def next_batch(self) -> list[int]:
        """The next batch of the epoch (a new shuffled epoch when this one is used up)."""
        p = self.progress
        if p.position >= len(p.epoch_batches):
            p.epoch_batches = batches(self.train, self.recipe["batch_seconds"], self.rng)
            p.position = 0
            p.epoch += 1
        batch = p.epoch_batches[p.position]
        p.position += 1
        return batch

    def train_step(self) -> tuple[float, dict[str, float], float]:
        """One optimizer step on the next batch: (loss, its parts, seconds of audio in the batch)."""
        p = self.progress
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr(p.step, p.seconds)
        frozen = p.step < self.recipe.get("freeze_encoder_steps", 0)
        for parameter in encoder_parameters(self.model):
            parameter.requires_grad_(not frozen)
        items = [self.train[i] for i in self.next_batch()]
        if self.recipe.get("noise", 0.0):
            items = [(add_noise(f, self.rng.uniform(*NOISE_SNR_DB)) if self.rng.random() < self.recipe["noise"]
                      else f, t, r) for f, t, r in items]
        if self.recipe["augment"]:
            items = [(augment(f, self.rng), t, r) for f, t, r in items]
        features, lengths, targets, target_lengths = (x.to(self.device) for x in collate(items))
        loss, parts = self.model.loss(features, lengths, targets, target_lengths,
                                      ctc_weight=self.recipe["ctc_weight"])
        if not math.isfinite(float(loss.detach())):  # before the update: the stored state stays usable
            raise TrainingError(f"loss is {float(loss.detach())} at step {p.step + 1}; the weights were not "
                                "updated (the last training state is the one to resume)")
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        p.step += 1
        p.last_loss = float(loss.detach())
        audio = float(lengths.sum()) / 100
        p.audio_seconds += audio
        return p.last_loss, parts, audio

    def evaluate(self, out: Path) -> tuple[float, bool]:
        """Dev greedy WER; the model is saved to ``out`` when it is the best so far."""
        p = self.progress
        wer = greedy_wer(self.model, self.tokens, self.dev, self.recipe["batch_seconds"], self.device)
        p.last_eval_step = p.step
        if wer < p.best_wer:
            p.best_wer, p.best_step = wer, p.step
            save_model(self.model, self.tokens, out)
            return wer, True
        return wer, False

    def state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "recipe": self.recipe,
            "model_config": asdict(self.model.config),
            "tokens": tokens_payload(self.tokens),
            "train_digest": self.train_digest,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "progress": asdict(self.progress),
            "python_rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s output (the model and optimizer must have the stored shapes)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule = Schedule(**state["schedule"])
        self.progress = Progress(**state["progress"])
        self.rng.setstate(_as_tuple(state["python_rng"]))
        torch.set_rng_state(state["torch_rng"].cpu())  # generator states are CPU byte tensors, wherever loaded
        if self.device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants tuples where a stored state may hold lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def write_state(run: Run, path: Path) -> None:
    """The training state, written atomically (a run killed while writing keeps the previous one)."""
    with atomic_output(path) as tmp:
        torch.save(run.state(), tmp)


def read_state(path: Path, device: torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"{path}: no training state to resume (start without --resume)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many kinds for bad files
        raise TrainingError(f"{path}: not a readable training state ({str(error).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path}: not a training state written by train_teacher.py")
    return state


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recipe = parser.add_argument_group("recipe (stored in the training state; with --resume, the stored values)")
    recipe.add_argument("--arch", choices=ARCHS, default=None, help="stateless (default) or char")
    recipe.add_argument("--lr", type=float, default=None, help="peak learning rate (2e-3)")
    recipe.add_argument("--warmup", type=int, default=None, help="warm-up steps (100)")
    recipe.add_argument("--batch-seconds", type=float, default=None, help="audio per batch (60)")
    recipe.add_argument("--seed", type=int, default=None, help="(0)")
    recipe.add_argument("--no-augment", dest="augment", action="store_const", const=False, default=None,
                        help="train on clean features only")
    recipe.add_argument("--noise", type=float, default=None,
                        help="stateless: share of batch items given white noise at 5-30 dB SNR, added to the raw "
                             "log-mel in the power domain (0)")
    recipe.add_argument("--bpe-vocab", type=int, default=None,
                        help="stateless: most sentencepiece pieces (80; a small text may give fewer)")
    recipe.add_argument("--steps", type=int, default=None,
                        help="length of the cosine schedule in optimizer steps; the run ends there "
                             "(default: the schedule spans --minutes of training time)")
    recipe.add_argument("--ctc-weight", type=float, default=None, help="(0.3)")
    recipe.add_argument("--freeze-encoder-steps", type=int, default=None,
                        help="train everything but the encoder for this many first steps (0); with "
                             "--init-encoder, the new heads learn to read the copied encoder before it moves")
    recipe.add_argument("--model-config", type=json.loads, default=None,
                        help='JSON of model config fields to change, e.g. \'{"encoder_layers": 2}\'')
    parser.add_argument("--train", type=Path, default=DATA / "teacher_train_cuts.jsonl.gz")
    parser.add_argument("--dev", type=Path, default=DATA / "teacher_dev_cuts.jsonl.gz")
    parser.add_argument("--out", type=Path, default=DATA / "teacher.pt", help="best checkpoint (by dev WER)")
    parser.add_argument("--state", type=Path, default=None, help="training state (default <out stem>.state.pt)")
    parser.add_argument("--resume", action="store_true", help="continue the run whose state is --state")
    parser.add_argument("--init", type=Path, default=None, help="start from this checkpoint's weights")
    parser.add_argument("--init-encoder", type=Path, default=None,
                        help="stateless: start the encoder (convolutions, projection, LSTM) from this character "
                             "checkpoint's encoder; both normalise fbank per utterance, so its weights carry over")
    parser.add_argument("--minutes", type=float, default=25.0, help="training time of this invocation")
    parser.add_argument("--stop-after-steps", type=int, default=None, help="optimizer steps of this invocation")
    parser.add_argument("--eval-every", type=int, default=150, help="steps between dev evaluations")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between training-state writes")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0,
                        help="minutes between training-state writes")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--limit", type=int, default=None, help="use only this many cuts per split (smoke test)")
    return parser.parse_args(argv)


def resolve_recipe(args: argparse.Namespace, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The run's recipe: the stored one when resuming (explicit options must agree), else options + defaults."""
    given = {key: getattr(args, key) for key in RECIPE_DEFAULTS if getattr(args, key) is not None}
    if stored is None:
        recipe = {**RECIPE_DEFAULTS, **given}
        recipe["schedule_minutes"] = args.minutes
        return recipe
    for key, value in given.items():
        if value != stored.get(key):
            flag = "--no-augment" if key == "augment" else "--" + key.replace("_", "-")
            raise TrainingError(f"{flag} {value} differs from the run being resumed ({stored.get(key)}); "
                                "drop it or start a new run")
    return dict(stored)


def log(message: str) -> None:
    print(message, flush=True)


def prepare(args: argparse.Namespace) -> tuple[Run, Path]:
    """Load the data and build (or restore) the run; returns it and the state path."""
    out: Path = args.out
    state_path: Path = args.state or out.with_name(out.stem + ".state.pt")
    device = torch.device(args.device)
    stored = None
    if args.resume:
        if args.init is not None:
            raise TrainingError("--init starts a new run; it cannot be combined with --resume")
        stored = read_state(state_path, device)
    elif state_path.exists():
        raise TrainingError(f"{state_path}: a training state exists; pass --resume to continue it, "
                            "or remove it (or pass another --state) to start over")
    recipe = resolve_recipe(args, stored["recipe"] if stored else None)
    arch = recipe["arch"]
    raw = raw_features(arch)
    if not 0.0 <= recipe.get("noise", 0.0) <= 1.0:
        raise TrainingError(f"--noise must be a share in [0, 1], not {recipe['noise']}")
    if recipe.get("noise", 0.0) and not raw:
        raise TrainingError("--noise needs --arch stateless (noise adds to raw log-mel power, not to normalised "
                            "features)")

    model: Model | None = None
    tokens: TokenTable
    if stored is not None:
        tokens = tokens_from_payload(arch, stored["tokens"])
    elif args.init is not None:
        model, tokens = load_init(arch, args.init)
        log(f"starting from the weights of {args.init}")
    elif arch == "stateless":
        if not args.train.is_file():
            raise TrainingError(f"{args.train}: manifest not found (run `make corpus` first)")
        texts = split_texts(list(load_cuts(args.train))[: args.limit])
        tokens = train_bpe_model(texts, recipe["bpe_vocab"])
        log(f"sentencepiece: {len(tokens)} pieces from {len(texts)} training transcripts")
    else:
        tokens = TokenTable()

    started = time.perf_counter()
    train, digest = load_split(args.train, tokens, args.threads, raw, args.limit)
    dev, _ = load_split(args.dev, tokens, args.threads, raw, args.limit)
    if stored is not None and stored["train_digest"] != digest:
        raise TrainingError(f"{args.train}: not the training data of the run being resumed "
                            "(cut ids or transcripts changed)")
    hours = sum(f.shape[0] for f, _, _ in train) / 100 / 3600
    log(f"features ({'raw log-mel' if raw else 'normalised'}): {len(train)} train cuts ({hours:.2f} h), "
        f"{len(dev)} dev cuts, {time.perf_counter() - started:.0f} s")

    if model is None:
        torch.manual_seed(recipe["seed"])
        overrides = {k: v for k, v in (stored["model_config"] if stored else recipe["model_config"]).items()
                     if k != "vocab_size"}
        model = build_model(arch, len(tokens), overrides)
        if args.init_encoder is not None:
            copy_encoder(args.init_encoder, model)
            log(f"encoder from {args.init_encoder}")
    run = Run(recipe, model, tokens, train, dev, digest, device)
    if stored is not None:
        run.restore(stored)
        p = run.progress
        log(f"resuming {state_path} at step {p.step} (epoch {p.epoch}, {p.seconds / 60:.1f} min trained, "
            f"best dev WER {100 * p.best_wer:.2f}% at step {p.best_step})")
    elif isinstance(tokens, SentencePieceTable):  # a new run: its vocabulary beside the checkpoint
        with atomic_output(bpe_path(out)) as tmp:
            tmp.write_bytes(tokens.model_bytes)
        log(f"sentencepiece model -> {bpe_path(out)}")
    log(f"model: {arch}, {parameter_count(run.model) / 1e6:.2f}M parameters, {len(tokens)} symbols")
    return run, state_path


def train(args: argparse.Namespace) -> Run:
    """Train until the schedule ends or this invocation's bound; returns the run (tests inspect it)."""
    torch.set_num_threads(args.threads)
    run, state_path = prepare(args)
    p = run.progress
    budget = 60.0 * args.minutes
    started = last_write = time.perf_counter()
    steps_here = 0
    base_seconds = p.seconds
    while not run.schedule.finished(p.step, p.seconds):
        loss, parts, _ = run.train_step()
        steps_here += 1
        elapsed = time.perf_counter() - started
        p.seconds = base_seconds + elapsed
        if p.step % args.log_every == 0:
            speed = p.audio_seconds / max(p.seconds, 1e-9)
            log(f"step {p.step:5d}  {p.seconds / 60:6.1f} min  loss {loss:7.2f} "
                f"(rnnt {parts['rnnt']:.2f}, ctc {parts.get('ctc', 0):.2f})  "
                f"lr {run.optimizer.param_groups[0]['lr']:.2e}  {speed:.0f}x real time")
        invocation_over = elapsed >= budget or (args.stop_after_steps is not None
                                                and steps_here >= args.stop_after_steps)
        schedule_over = run.schedule.finished(p.step, p.seconds)
        evaluated = False
        if p.step % args.eval_every == 0 or invocation_over or schedule_over:
            wer, saved = run.evaluate(args.out)
            evaluated = True
            log(f"step {p.step:5d}  dev greedy WER {100 * wer:.2f}%" + ("  (saved)" if saved else ""))
        if (evaluated or invocation_over or schedule_over or p.step % args.checkpoint_every == 0
                or time.perf_counter() - last_write >= 60.0 * args.checkpoint_minutes):
            write_state(run, state_path)
            last_write = time.perf_counter()
        if invocation_over:
            break
    finished = run.schedule.finished(p.step, p.seconds)
    log(f"{'done' if finished else 'stopped (resume with --resume)'}: step {p.step}, {steps_here} steps in "
        f"{(time.perf_counter() - started) / 60:.1f} min, best dev WER {100 * p.best_wer:.2f}% "
        f"(step {p.best_step}) -> {args.out}; state {state_path}")
    return run


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        train(args)
    except (TrainingError, ChoralError) as error:  # ChoralError: a bad --init checkpoint or vocabulary
        print(f"train_teacher.py: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
