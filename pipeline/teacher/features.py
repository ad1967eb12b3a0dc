"""80-dim log-mel filterbank features of a cut's audio at 16 kHz (lhotse's Kaldi-compatible Fbank).

Recordings at another rate are resampled by lhotse. Features are mean- and
variance-normalised per utterance and mel bin (subtracting the mean removes the
channel's constant spectral tilt; dividing by the spread brings values near unit
scale, which LSTM training needs).
Encoders trained on raw log-mel fbank (icefall's) get :func:`log_mel`'s output,
without the normalisation. Problems with the audio (missing file, unreadable,
empty) are raised as :class:`~.contracts.AudioError` so the decode stage can
list the cut as failed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from lhotse import Fbank, FbankConfig
from lhotse.cut import Cut

from .contracts import AudioError

SAMPLING_RATE = 16_000
NUM_MEL_BINS = 80


@lru_cache(maxsize=4)
def _extractor(num_mel_bins: int) -> Fbank:
    return Fbank(FbankConfig(num_mel_bins=num_mel_bins, sampling_rate=SAMPLING_RATE))


def load_audio(cut: Cut) -> np.ndarray:
    """Mono 16 kHz samples of ``cut`` (1-D float32); raises AudioError(cut.id) when unusable."""
    if not getattr(cut, "has_recording", False):
        raise AudioError({cut.id: "cut has no recording"})
    for source in cut.recording.sources:
        if source.type == "file" and not Path(source.source).is_file():
            raise AudioError({cut.id: f"audio file not found: {source.source}"})
    try:
        if cut.sampling_rate != SAMPLING_RATE:
            cut = cut.resample(SAMPLING_RATE)
        samples = np.asarray(cut.load_audio(), dtype=np.float32)
    except FileNotFoundError as error:
        raise AudioError({cut.id: f"audio file not found ({error.filename or error})"}) from None
    except Exception as error:  # audio backends raise many kinds
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise AudioError({cut.id: f"cannot read audio ({message})"}) from None
    if samples.ndim == 2:
        samples = samples.mean(axis=0)  # several channels: average them
    if samples.size == 0:
        raise AudioError({cut.id: "audio is empty"})
    if not np.all(np.isfinite(samples)):
        raise AudioError({cut.id: "audio holds NaN or infinite samples"})
    return samples


def log_mel(samples: np.ndarray, num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
    """Log-mel filterbank ``(frames, num_mel_bins)`` of 16 kHz samples (10 ms shift), not normalised."""
    features = _extractor(num_mel_bins).extract(samples[None, :].astype(np.float32), SAMPLING_RATE)
    return np.asarray(features, dtype=np.float32)


def fbank(samples: np.ndarray, num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
    """:func:`log_mel` with per-utterance mean and variance normalisation (raw log-mel values spread over
    +-10, which stalls LSTM training)."""
    features = log_mel(samples, num_mel_bins)
    features = features - features.mean(axis=0, keepdims=True)
    return features / (features.std(axis=0, keepdims=True) + 1e-5)


def cut_features(cut: Cut, num_mel_bins: int = NUM_MEL_BINS, normalize: bool = True) -> np.ndarray:
    """Features of one cut (:func:`fbank`, or :func:`log_mel` without ``normalize``); raises AudioError when
    its audio is unusable or too short for one frame."""
    samples = load_audio(cut)
    features = fbank(samples, num_mel_bins) if normalize else log_mel(samples, num_mel_bins)
    if features.shape[0] == 0:
        raise AudioError({cut.id: "audio is too short for one feature frame"})
    return features


def batch_features(cuts, num_mel_bins: int = NUM_MEL_BINS, normalize: bool = True) -> list[np.ndarray]:
    """Features of every cut (see :func:`cut_features`); raises one AudioError naming all cuts whose audio failed."""
    out: list[np.ndarray] = []
    failures: dict[str, str] = {}
    for cut in cuts:
        try:
            out.append(cut_features(cut, num_mel_bins, normalize))
        except AudioError as error:
            failures.update(error.failures)
    if failures:
        raise AudioError(failures)
    return out
