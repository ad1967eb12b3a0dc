"""Noisy pairs: decode's energy SNR (pipeline.noise) and propagate's noisy_pair_snr, which keeps one noisy reading
from lending its text to another by sound alone (the exemption by sound here; the far path in test_retrieve.py)."""

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from choral.pipeline.errors import ConfigError, InputError
from choral.pipeline.fields import snr_db
from choral.pipeline.noise import energy_snr_db
from choral.pipeline.propagate import PropagateConfig
from choral.pipeline.propagate.calibrate import Rule, candidates
from choral.pipeline.propagate.engine import propagate_batch
from choral.pipeline.propagate.labels import CutEntry, noisy_pair

RATE = 16_000


def _speech_like(noise_db: float | None, seed: int = 0) -> np.ndarray:
    """0.5 s of silence, 2 s of a tone whose loudness moves like syllables, 0.5 s of silence; with white noise
    ``noise_db`` below the tone's power over the whole clip (None: none)."""
    rng = np.random.default_rng(seed)
    t = np.arange(2 * RATE) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    clip = np.concatenate([np.zeros(RATE // 2), tone, np.zeros(RATE // 2)])
    if noise_db is not None:
        power = float(np.mean(tone ** 2))
        clip = clip + rng.standard_normal(clip.size) * np.sqrt(power / 10 ** (noise_db / 10))
    return clip.astype(np.float32)


def test_energy_snr_reads_a_silent_floor_high_and_noise_low() -> None:
    assert energy_snr_db(_speech_like(None)) > 60.0
    assert 5.0 < energy_snr_db(_speech_like(10.0)) < 20.0
    assert energy_snr_db(_speech_like(10.0)) < energy_snr_db(_speech_like(30.0))
    assert energy_snr_db(np.zeros(0)) == 0.0


def _entry(cut_id: str, snr: float | None, group: str = "g0", hypotheses: list[str] | None = None,
           reference: str | None = None, scores: list[float] | None = None) -> CutEntry:
    texts = hypotheses or [reference or "x"]
    return CutEntry(cut_id, group, texts, texts, np.asarray(scores or [-1.0] * len(texts)), reference,
                    reference, snr_db=snr)


@pytest.mark.parametrize("a, b, below, noisy", [(12.0, 14.0, 20.0, True), (12.0, 70.0, 20.0, False),
                                                (12.0, 14.0, 0.0, False), (12.0, None, 20.0, False),
                                                (19.9, 20.0, 20.0, False)])
def test_a_noisy_pair_is_two_measured_readings_both_below_the_level(a, b, below, noisy) -> None:
    assert noisy_pair(_entry("a", a), _entry("b", b), below) is noisy


def _sound_group(snr_cut: float, snr_reading: float):
    """A group formed by sound: an annotated reading and a cut whose teacher scores -1.5 nats per word, 0.5
    thresholds apart by sound."""
    entries = [_entry("r", snr_reading, "a0000001", ["the pot her shaved"], reference="the potter shaped a vase"),
               _entry("c", snr_cut, "a0000001", ["sun set in", "sun sat"], scores=[-4.5, -6.0])]
    adjacency = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]))
    sound = sp.csr_matrix(np.array([[0.0, 0.5], [0.5, 0.0]]))
    batch = propagate_batch(entries, adjacency, np.ones(2, dtype=np.int64), PropagateConfig())
    return batch, adjacency, sound


@pytest.mark.parametrize("snr_cut, snr_reading, level, exempt", [(12.0, 14.0, 20.0, False), (12.0, 14.0, 0.0, True),
                                                                 (12.0, 75.0, 20.0, True), (70.0, 14.0, 20.0, True)])
def test_the_exemption_by_sound_reads_no_annotated_reading_when_both_are_noisy(snr_cut, snr_reading, level,
                                                                                exempt) -> None:
    batch, adjacency, sound = _sound_group(snr_cut, snr_reading)
    found = candidates(batch, adjacency, 1, 0.0, sound=sound, noisy_snr=level)
    assert found is not None and batch.texts_of(1)[0][found.winner] == "the potter shaped a vase"
    assert found.unheard and found.by_sound
    assert found.source_distance == (0.5 if exempt else np.inf)
    assert found.exempt(Rule()) is exempt


def test_a_cut_s_snr_must_be_a_finite_number_and_the_level_non_negative() -> None:
    assert snr_db({"id": "a", "custom": {"snr_db": 12.5}}, "m.jsonl") == 12.5
    assert snr_db({"id": "a", "custom": {}}, "m.jsonl") is None
    for bad in (float("nan"), "loud", True):
        with pytest.raises(InputError, match="custom.snr_db"):
            snr_db({"id": "a", "custom": {"snr_db": bad}}, "m.jsonl")
    with pytest.raises(ConfigError, match="noisy_pair_snr"):
        PropagateConfig(noisy_pair_snr=-1.0)
    assert Rule.of(replace(PropagateConfig(), noisy_pair_snr=20.0)).noisy_pair_snr == 20.0
