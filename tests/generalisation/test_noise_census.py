"""noise_census.py: the energy-percentile SNR of a clip, and the split of changed labels by noisy cut and source."""

from __future__ import annotations

import numpy as np
import pytest


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * 220 * t)


def test_snr_separates_a_clean_clip_from_one_read_in_noise(protocol_script) -> None:
    census = protocol_script("noise_census")
    rate = 16000
    clean = np.concatenate([np.zeros(int(0.3 * rate)), _tone(1.0), np.zeros(int(0.3 * rate))])
    rng = np.random.default_rng(0)
    speech_power = float(np.mean(_tone(1.0) ** 2))
    noisy = clean + rng.normal(0.0, np.sqrt(speech_power / 10.0), clean.shape)     # 10 dB over the whole clip
    assert census.energy_snr_db(clean, rate) > 60.0
    assert 5.0 < census.energy_snr_db(noisy, rate) < 20.0
    assert census.energy_snr_db(np.stack([noisy, clean], axis=1), rate) < 20.0      # the first channel
    assert np.isfinite(census.energy_snr_db(np.zeros(10), rate))                      # shorter than a frame


def test_split_counts_labels_by_noisy_cut_and_source(protocol_script) -> None:
    census = protocol_script("noise_census")
    snr = {"a": 12.0, "b": 14.0, "c": 70.0}
    rows = [{"step": "retrieve/far", "cut": "a", "source": "b", "before": 2, "after": 5},
            {"step": "retrieve/far", "cut": "a", "source": "c", "before": 4, "after": 0},
            {"step": "retrieve/far", "cut": "c", "source": None, "before": 1, "after": 1}]
    out = census.split(rows, snr, 20.0)
    assert out[("retrieve/far", True, True)] == [1, 0, 1, -3]
    assert out[("retrieve/far", True, False)] == [1, 1, 0, 4]
    assert out[("retrieve/far", False, False)] == [1, 0, 0, 0]


def test_reported_draws_are_refused(protocol_script, tmp_path) -> None:
    with pytest.raises(SystemExit):
        protocol_script("noise_census").main([str(tmp_path / "draw33")])
