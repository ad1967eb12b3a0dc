"""Held-out reading conditions of the generalisation protocol and how each is rendered.

A condition is a synthesiser voice, the pronunciation it reads with, and an acoustic treatment:

- ``espeak``: the accent is the espeak-ng voice piper phonemizes with (as in ``benchmarks/accented``);
- ``tempo`` / ``pitch``: the pseudo-speaker mechanism of ``corpus_voices``: the TTS renders
  ``tempo x pitch`` times slower (``length_scale``), then the waveform is resampled as if recorded at
  ``pitch`` times its rate, so the pitch rises by ``pitch`` and the duration becomes ``tempo`` times
  the original (``tempo < 1`` is faster speech);
- ``snr_db``: white Gaussian noise added at that signal-to-noise ratio, ``SNR = 10 log10(P_s / P_n)``
  with ``P_s`` the mean power of the speech (before the silent edges are added), so the noise has
  standard deviation ``sqrt(P_s / 10^(SNR/10))``; seeded per cut.

:data:`CONDITIONS` holds every condition the protocol knows; none is a condition of the accented
benchmark's recipe (``make_corpus.POOL_CONDITIONS`` and the demo's accents; ``us-control`` is the
recipe's majority voice, read by the protocol's own prompts, as the control).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ACCENTED = Path(__file__).resolve().parents[1] / "accented"
if str(ACCENTED) not in sys.path:
    sys.path.insert(0, str(ACCENTED))

SAMPLE_RATE = 16000
CONTROL = "us-control"


@dataclass(frozen=True)
class Condition:
    """One way every prompt is read: voice (``joe`` = piper, ``heart`` = hibari), espeak accent or
    lexicon, tempo and pitch factors, optional additive noise (SNR in dB)."""

    name: str
    voice: str
    accent: str
    tempo: float = 1.0
    pitch: float = 1.0
    snr_db: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.voice not in ("joe", "heart"):
            raise ValueError(f"condition {self.name}: voice must be joe or heart, not {self.voice!r}")
        if not (0.5 <= self.tempo <= 2.0 and 0.5 <= self.pitch <= 2.0):
            raise ValueError(f"condition {self.name}: tempo and pitch must lie in [0.5, 2]")
        if self.voice == "heart" and self.accent not in ("en-us", "en-gb"):
            raise ValueError(f"condition {self.name}: hibari reads en-us or en-gb (its two lexicons)")

    @property
    def is_control(self) -> bool:
        return self.name == CONTROL

    @property
    def speaker(self) -> str:
        """The pseudo-speaker name written into the cut (voice plus the condition)."""
        return f"{self.voice}-{self.name}"


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition(CONTROL, "joe", "en-us", description="piper joe, espeak en-us, unperturbed (the majority voice)"),
    Condition("en-us-nyc", "joe", "en-us-nyc", description="piper joe, espeak New York City English"),
    Condition("en-gb-x-gbcwmd", "joe", "en-gb-x-gbcwmd", description="piper joe, espeak West Midlands English"),
    Condition("en-gb", "joe", "en", description="piper joe, espeak's default British English voice"),
    Condition("hibari-gb-slow", "heart", "en-gb", tempo=1.12, pitch=0.88,
              description="hibari heart (second synthesiser), British lexicon, 12% slower, pitch x0.88"),
    Condition("us-fast-high", "joe", "en-us", tempo=0.85, pitch=1.18,
              description="piper joe en-us, 15% faster, pitch x1.18 (outside the recipe's speakers)"),
    Condition("us-noisy", "joe", "en-us", snr_db=10.0,
              description="piper joe en-us with white noise at 10 dB SNR"),
)}
DEFAULT_CONDITIONS: tuple[str, ...] = (CONTROL, "en-us-nyc", "en-gb-x-gbcwmd", "hibari-gb-slow", "us-fast-high",
                                       "us-noisy")


def select_conditions(names: list[str] | tuple[str, ...]) -> tuple[Condition, ...]:
    """The named conditions in order; an unknown or repeated name is a ValueError listing the known ones."""
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}; known: {', '.join(CONDITIONS)}")
    if len(set(names)) != len(names):
        raise ValueError("a condition is named twice")
    if not names:
        raise ValueError("no condition selected")
    return tuple(CONDITIONS[n] for n in names)


def noise_sigma(power: float, snr_db: float) -> float:
    """Standard deviation of white noise at ``snr_db`` below a signal of mean power ``power``."""
    return float(np.sqrt(power / 10 ** (snr_db / 10)))


def finish(audio: np.ndarray, snr_db: float | None, seed: int) -> np.ndarray:
    """0.15 s of silence at both ends, white noise at ``snr_db`` (relative to the speech's mean power,
    over the whole clip, edges included) when given, then peak 0.9."""
    edge = np.zeros(int(0.15 * SAMPLE_RATE), dtype=np.float32)
    speech = audio.astype(np.float32)
    out = np.concatenate([edge, speech, edge]).astype(np.float64)
    power = float(np.mean(np.square(speech, dtype=np.float64))) if speech.size else 0.0
    if snr_db is not None and power > 0.0:
        out += np.random.default_rng(seed).normal(0.0, noise_sigma(power, snr_db), size=out.shape)
    peak = float(np.max(np.abs(out))) or 1.0
    return (0.9 * out / peak).astype(np.float32)


def render(text: str, condition: Condition, seed: int) -> np.ndarray:
    """16 kHz mono float32 audio of ``text`` read in ``condition`` (needs the ``corpus`` extra)."""
    import corpus_voices

    slowdown = condition.tempo * condition.pitch
    if condition.voice == "joe":
        audio, rate = corpus_voices._render_joe(text, condition.accent, slowdown)
    else:
        # corpus_voices picks hibari's British lexicon for any accent other than en-us
        audio, rate = corpus_voices._render_heart(text, condition.accent, slowdown, seed)
    audio = corpus_voices.to_speaker_rate(audio, rate, condition.pitch)
    return finish(audio, condition.snr_db, seed)
