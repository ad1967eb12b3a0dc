"""Split long recordings into utterance-sized pieces at pauses: an energy-based voice-activity detector.

The teacher labels a whole recording with its first sentence, so ``prepare`` cuts anything longer than
``max_duration`` seconds into pieces that each hold one stretch of speech. On 16 kHz audio, in frames of
10 ms (160 samples, no overlap), frame ``t`` has the energy

    E_t = 10 log10( (1/N) sum_n x_n^2 + 1e-10 )  dB (full scale)

and the recording's level of speech is ``L``, the 95th percentile of ``E_t`` (its loud frames). A frame
is speech when

    E_t > max(L - THRESHOLD_DB, FLOOR_DB)

(35 dB below the loud frames, and never below -70 dBFS, so a recording of near-silence holds no speech).
Runs of speech separated by less than ``min_pause`` seconds are one utterance (the closures of stops and
the breaks between words are short); runs shorter than ``MIN_SPEECH`` seconds (clicks) are dropped. Each
utterance is widened by ``PRE_ROLL`` seconds before and ``HANGOVER`` seconds after (each at most half the
pause to its neighbour), since word onsets and final fricatives sit below the threshold. An utterance still longer than
``max_duration`` (speech with no pause) is cut at the quietest frame ``argmin_t S_t`` of the smoothed
energy ``S_t`` (a 50 ms moving average) in ``[start + max_duration / 2, start + max_duration]``, again
until every piece fits. Pieces shorter than ``min_duration`` are too short to hold a word and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SAMPLING_RATE = 16_000
FRAME = 0.01  # seconds per energy frame
THRESHOLD_DB = 35.0  # a frame this far below the loud frames is a pause
FLOOR_DB = -70.0  # and so is any frame below this level (dB full scale)
LOUD_PERCENTILE = 95.0
MIN_SPEECH = 0.1  # seconds: shorter bursts of energy are clicks, not words
PRE_ROLL = 0.2  # seconds of context kept before each utterance (weak onsets)
HANGOVER = 0.3  # and after it (final fricatives and the decay of the last word)
SMOOTH_FRAMES = 5  # moving average used to find the quietest split point
BLOCK_SECONDS = 300.0  # audio is read in blocks of this length, so memory does not grow with the recording


@dataclass(frozen=True)
class Piece:
    """One utterance-sized piece, in seconds from the start of the audio it was found in."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def frame_energies(samples: np.ndarray) -> np.ndarray:
    """``E_t`` in dB of consecutive 10 ms frames of 16 kHz mono ``samples`` (a partial last frame counts)."""
    hop = int(round(FRAME * SAMPLING_RATE))
    n = len(samples)
    if n == 0:
        return np.zeros(0)
    padded = np.zeros(-(-n // hop) * hop, dtype=np.float64)
    padded[:n] = samples
    frames = padded.reshape(-1, hop)
    counts = np.full(len(frames), hop, dtype=np.float64)
    counts[-1] = n - (len(frames) - 1) * hop
    return 10.0 * np.log10((frames ** 2).sum(axis=1) / counts + 1e-10)


def energies_of(load: Callable[[float, float], np.ndarray], duration: float) -> np.ndarray:
    """Frame energies of ``duration`` seconds of audio read block by block: ``load(offset, length)`` gives
    16 kHz mono samples of that part (blocks are whole frames long, so frames never straddle two)."""
    parts = []
    offset = 0.0
    while offset < duration - 1e-9:
        length = min(BLOCK_SECONDS, duration - offset)
        parts.append(frame_energies(np.asarray(load(offset, length), dtype=np.float64)))
        offset += BLOCK_SECONDS
    return np.concatenate(parts) if parts else np.zeros(0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[first, last + 1)`` frame ranges where ``mask`` is true."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def speech_pieces(energies: np.ndarray, duration: float, *, max_duration: float, min_duration: float,
                  min_pause: float) -> list[Piece]:
    """The utterances of a recording with frame energies ``energies`` (see the module's docstring)."""
    if len(energies) == 0:
        return []
    level = float(np.percentile(energies, LOUD_PERCENTILE))
    speech = energies > max(level - THRESHOLD_DB, FLOOR_DB)
    runs = _runs(speech)
    merged: list[list[int]] = []
    pause = int(round(min_pause / FRAME))
    for first, last in runs:
        if merged and first - merged[-1][1] < pause:
            merged[-1][1] = last
        else:
            merged.append([first, last])
    spans = [(first * FRAME, min(last * FRAME, duration)) for first, last in merged
             if (last - first) * FRAME >= MIN_SPEECH]
    widened = []
    for i, (start, end) in enumerate(spans):
        before = start if i == 0 else (start - spans[i - 1][1]) / 2
        after = duration - end if i == len(spans) - 1 else (spans[i + 1][0] - end) / 2
        widened.append((start - min(PRE_ROLL, before), end + min(HANGOVER, after)))
    smooth = np.convolve(energies, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="same")
    pieces = []
    for start, end in widened:
        while end - start > max_duration:
            first = int(np.ceil((start + max_duration / 2) / FRAME))
            last = max(first + 1, int(np.floor((start + max_duration) / FRAME)))
            cut_at = (first + int(np.argmin(smooth[first:last]))) * FRAME
            pieces.append(Piece(start, cut_at))
            start = cut_at
        pieces.append(Piece(start, end))
    return [p for p in pieces if p.duration >= min_duration]
