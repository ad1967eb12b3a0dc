"""Synthetic decoded manifests with known structure, for tests, benchmarks and trials.

Until a real teacher has decoded audio, the rescoring stages need cuts that look
decoded: n-best lists with log-probabilities and embeddings. This generator makes
them with controllable structure:

- every prompt is read by several speakers in every accent, so groups of
  overlapping hypotheses exist;
- each cut's embedding is a noisy copy of its prompt's prototype (a random series
  with a smooth trend, since DTW treats the vector as a time series) plus a per-accent shift
  and a per-speaker offset;
- each accent has its own consistent confusions (word -> wrong word); accented
  cuts often rank a confused text above the correct one, majority cuts rarely do;
- a fraction of cuts (stratified by accent) is annotated: its supervision carries
  the reference; the references of all cuts go to a separate supervision manifest
  that only evaluation reads.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lhotse import MonoCut, SupervisionSegment
from lhotse.array import TemporalArray
from lhotse.features.io import NumpyHdf5Writer

from .manifest import CutWriter, atomic_output

_TEMPLATES: tuple[str, ...] = (
    "what is the weather in {city} {day}",
    "will it rain in {city} {day}",
    "set a timer for {number} minutes",
    "wake me up at {number} {ampm} {day}",
    "call {digits}",
    "play {genre} music by {artist}",
    "turn {onoff} the {device} in the {room}",
    "set the {room} {device} to {number} percent",
    "navigate to {place} in {city}",
    "how long does it take to drive to {place}",
    "add {item} and {item2} to my shopping list",
    "remind me to buy {item} {day}",
    "who wrote the song {song}",
    "how far is {city} from {city2}",
)

_SLOTS: dict[str, tuple[str, ...]] = {
    "city": ("boston", "denver", "seattle", "austin", "chicago", "dallas", "phoenix", "houston",
             "portland", "atlanta", "detroit", "miami", "toronto", "glasgow", "leeds", "kingston",
             "london", "dublin", "paris", "madrid", "berlin", "vienna", "oslo", "lisbon"),
    "day": ("today", "tomorrow", "tonight", "on monday", "on tuesday", "on wednesday",
            "on thursday", "on friday", "on saturday", "on sunday", "this weekend", "next week"),
    "number": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
               "eleven", "twelve", "fifteen", "twenty", "thirty", "forty", "fifty"),
    "ampm": ("a m", "p m"),
    "genre": ("jazz", "rock", "folk", "blues", "soul", "country", "classical", "reggae", "pop", "metal"),
    "artist": ("the beatles", "bob marley", "nina simone", "miles davis", "adele", "queen",
               "the cure", "dolly parton", "johnny cash", "aretha franklin", "prince", "blondie"),
    "onoff": ("on", "off"),
    "device": ("lights", "lamp", "heater", "fan", "thermostat", "television", "speaker", "kettle"),
    "room": ("kitchen", "bedroom", "living room", "bathroom", "garage", "office", "hallway", "basement"),
    "place": ("the airport", "the station", "the hospital", "the library", "the museum",
              "the stadium", "the harbour", "the market", "the university", "the cathedral"),
    "item": ("milk", "bread", "butter", "eggs", "apples", "rice", "coffee", "tea", "cheese",
             "onions", "carrots", "pasta", "sugar", "flour", "oranges", "yoghurt"),
    "song": ("yesterday", "redemption song", "hallelujah", "jolene", "imagine", "respect",
             "heroes", "wonderwall", "purple rain", "roxanne"),
}
_SLOTS["city2"] = _SLOTS["city"]
_SLOTS["item2"] = _SLOTS["item"]
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of a synthetic decoded manifest (cuts = prompts x accents x speakers)."""

    n_prompts: int = 100
    accents: tuple[str, ...] = ("us", "england", "scotland", "caribbean")
    majority_accent: str = "us"
    speakers_per_accent: int = 2
    annotated_fraction: float = 0.1
    nbest: int = 6
    embedding_dim: int = 64
    noise: float = 0.15
    accent_shift: float = 0.35
    speaker_shift: float = 0.1
    majority_error_rate: float = 0.1
    accent_error_rate: float = 0.6
    oracle_miss_rate: float = 0.05
    frames: bool = False
    frame_dim: int = 16
    seed: int = 0
    confusion_fraction: float = 0.15

    @property
    def n_cuts(self) -> int:
        return self.n_prompts * len(self.accents) * self.speakers_per_accent


@dataclass
class SyntheticCorpus:
    """Paths of the generated files and the ground truth kept for checks."""

    decoded: Path
    embeddings: Path
    references: Path
    n_cuts: int
    prompt_of_cut: dict[str, int] = field(default_factory=dict)
    reference_of_cut: dict[str, str] = field(default_factory=dict)


def _prompts(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct prompts from the templates (digit strings make the space unbounded)."""
    prompts: list[str] = []
    seen: set[str] = set()
    while len(prompts) < n:
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        values = {k: _SLOTS[k][rng.integers(len(_SLOTS[k]))] for k in _SLOTS if "{" + k + "}" in template}
        if "{digits}" in template:
            values["digits"] = " ".join(_DIGITS[d] for d in rng.integers(0, 10, size=rng.integers(4, 8)))
        text = template.format(**values)
        if text not in seen:
            seen.add(text)
            prompts.append(text)
    return prompts


def _smooth_series(rng: np.random.Generator, length: int, scale: float = 1.0) -> np.ndarray:
    """A smooth random series (a random walk, centred and scaled to unit spread)."""
    walk = np.cumsum(rng.standard_normal(length))
    walk -= walk.mean()
    return (scale * walk / (walk.std() + 1e-9)).astype(np.float32)


def _accent_confusions(accent: str, vocabulary: list[str], count: int, seed: int) -> dict[str, str]:
    """A consistent word -> wrong word map for one accent (what the teacher mishears)."""
    rng = np.random.default_rng([seed, sum(map(ord, accent))])
    chosen = rng.choice(len(vocabulary), size=min(count, len(vocabulary)), replace=False)
    return {vocabulary[i]: vocabulary[(i + 1 + rng.integers(len(vocabulary) - 1)) % len(vocabulary)] for i in chosen}


def _variants(words: list[str], confusions: dict[str, str], vocabulary: list[str],
              rng: np.random.Generator, count: int) -> list[str]:
    """Distinct wrong readings: the accent's confusion first, then random substitutions."""
    correct = " ".join(words)
    out: list[str] = []
    confused = [confusions.get(w, w) for w in words]
    if confused != words:
        out.append(" ".join(confused))
    attempts = 0
    while len(out) < count and attempts < 20 * count:
        attempts += 1
        base = list(confused if rng.random() < 0.5 else words)
        for _ in range(rng.integers(1, 3)):
            base[rng.integers(len(base))] = vocabulary[rng.integers(len(vocabulary))]
        text = " ".join(base)
        if text != correct and text not in out:
            out.append(text)
    return out


def _nbest(correct: str, wrong: list[str], top_is_wrong: bool, missing: bool, size: int,
           rng: np.random.Generator) -> list[dict]:
    """Build a sorted n-best list; the correct text is 1st, lower, or absent."""
    texts = list(wrong[: size - (0 if missing else 1)])
    if not missing:
        position = int(rng.integers(1, min(3, len(texts) + 1) + 1)) if top_is_wrong and texts else 0
        texts.insert(min(position, len(texts)), correct)
    scores = -np.cumsum(np.concatenate([[rng.uniform(0.2, 2.0)], rng.exponential(1.5, len(texts) - 1)]))
    return [{"text": t, "tokens": [], "score": float(s)} for t, s in zip(texts, scores)]


def generate(out_dir: str | Path, config: SyntheticConfig = SyntheticConfig()) -> SyntheticCorpus:
    """Write ``decoded.jsonl.gz``, ``embeddings.h5`` and ``references.jsonl.gz`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    prompts = _prompts(config.n_prompts, rng)
    vocabulary = sorted({w for p in prompts for w in p.split()})
    confusions = {a: _accent_confusions(a, vocabulary, max(1, round(config.confusion_fraction * len(vocabulary))),
                                         config.seed)
                  for a in config.accents if a != config.majority_accent}
    confusions[config.majority_accent] = {}
    # a smooth trend plus detail: pure random walks are too easy for DTW to warp onto each other
    prototypes = [(0.5 * _smooth_series(rng, config.embedding_dim)
                   + rng.standard_normal(config.embedding_dim)).astype(np.float32) for _ in prompts]
    accent_offsets = {a: _smooth_series(rng, config.embedding_dim, config.accent_shift) for a in config.accents}
    frame_bases = [rng.standard_normal((len(p.split()), config.frame_dim)).astype(np.float32) for p in prompts]

    corpus = SyntheticCorpus(out_dir / "decoded.jsonl.gz", out_dir / "embeddings.h5",
                             out_dir / "references.jsonl.gz", 0)
    references: list[SupervisionSegment] = []
    h5_final = str(corpus.embeddings.resolve())

    def store(arrays: NumpyHdf5Writer, key: str, value: np.ndarray, **temporal) -> object:
        # the writer sees the temporary file; the manifest must point at the final name
        stored = arrays.store_array(key, value, **temporal)
        if isinstance(stored, TemporalArray):
            return dataclasses.replace(stored, array=dataclasses.replace(stored.array, storage_path=h5_final))
        return dataclasses.replace(stored, storage_path=h5_final)

    with CutWriter(corpus.decoded) as writer, atomic_output(corpus.embeddings) as h5_tmp, \
            NumpyHdf5Writer(h5_tmp) as arrays:
        for accent in config.accents:
            for speaker_index in range(config.speakers_per_accent):
                speaker = f"{accent}-{speaker_index:02d}"
                speaker_offset = _smooth_series(rng, config.embedding_dim, config.speaker_shift)
                for prompt_index, prompt in enumerate(prompts):
                    cut_id = f"{speaker}-{prompt_index:05d}"
                    words = prompt.split()
                    majority = accent == config.majority_accent
                    error_rate = config.majority_error_rate if majority else config.accent_error_rate
                    wrong = _variants(words, confusions[accent], vocabulary, rng, config.nbest)
                    hyps = _nbest(prompt, wrong, rng.random() < error_rate,
                                  rng.random() < config.oracle_miss_rate, config.nbest, rng)
                    vector = (prototypes[prompt_index] + accent_offsets[accent] + speaker_offset
                              + config.noise * rng.standard_normal(config.embedding_dim).astype(np.float32))
                    custom = {"nbest": hyps, "accent": accent,
                              "embedding": store(arrays, "embedding/" + cut_id, vector.astype(np.float32))}
                    if config.frames:
                        repeats = rng.integers(2, 5, size=len(words))
                        frames = np.repeat(frame_bases[prompt_index], repeats, axis=0)
                        frames = frames + config.noise * rng.standard_normal(frames.shape).astype(np.float32)
                        custom["frames"] = store(arrays, "frames/" + cut_id, frames, frame_shift=0.04,
                                                 temporal_dim=0)
                    duration = round(0.35 * len(words) + 0.4, 2)
                    annotated = rng.random() < config.annotated_fraction
                    supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0,
                                                     duration=duration, text=prompt if annotated else None,
                                                     speaker=speaker, language="en")
                    writer.write(MonoCut(id=cut_id, start=0.0, duration=duration, channel=0,
                                         supervisions=[supervision], custom=custom))
                    references.append(SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0,
                                                         duration=duration, text=prompt, speaker=speaker,
                                                         language="en", custom={"accent": accent}))
                    corpus.prompt_of_cut[cut_id] = prompt_index
                    corpus.reference_of_cut[cut_id] = prompt
                    corpus.n_cuts += 1
    _write_supervisions(references, corpus.references)
    return corpus


def _write_supervisions(supervisions: list[SupervisionSegment], path: Path) -> None:
    with atomic_output(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as stream:
        for supervision in supervisions:
            stream.write(json.dumps(supervision.to_dict()) + "\n")
