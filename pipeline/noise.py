"""How noisy a reading is: an energy-percentile SNR read from the audio (``custom.snr_db``, written by decode).

With ``E_t`` the energy in dB of consecutive 10 ms frames of the cut's mono 16 kHz samples
(:func:`.segment.frame_energies`, the segmenter's frames),

    snr_db = E_90 - E_10,

the 90th percentile of the frame energies (the loud frames: speech) less the 10th (the floor between words and at
the edges). A clean recording has a near-silent floor and reads 60-90 dB; the generalisation protocol's ``us-noisy``
condition (white noise 10 dB under the speech over the whole clip) reads 10-17 dB on every development draw. It is a
rough figure, not a measured SNR (a clip that is speech from end to end reads low as well), and propagate uses it
only to tell a pair of noisy readings apart (``propagate.noisy_pair_snr``): noise makes readings of different
prompts sound alike, so a noisy cut's nearest annotated reading is, when it is noisy too, weak evidence.
"""

from __future__ import annotations

import numpy as np
from lhotse.cut import Cut

from .segment import frame_energies
from .teacher.features import load_audio

LOUD_PERCENTILE = 90.0
FLOOR_PERCENTILE = 10.0


def energy_snr_db(samples: np.ndarray) -> float:
    """``E_90 - E_10`` (dB) of mono 16 kHz ``samples`` (shape ``(n,)``); 0 for an empty clip."""
    energies = frame_energies(np.asarray(samples, dtype=np.float64))
    if len(energies) == 0:
        return 0.0
    loud, floor = np.percentile(energies, [LOUD_PERCENTILE, FLOOR_PERCENTILE])
    return float(loud - floor)


def cut_snr_db(cut: Cut) -> float:
    """The cut's :func:`energy_snr_db`, read from its audio (resampled to 16 kHz, channels averaged), to 0.01 dB;
    an unusable audio is a :class:`~.teacher.contracts.AudioError` naming the cut."""
    return round(energy_snr_db(load_audio(cut)), 2)
