"""replay_far.py's replay: which rows a far-path setting takes, and what it saves; reported draws are refused."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def replay_far(protocol_script):
    return protocol_script("replay_far")


def test_replay_counts_changed_helped_harmed_and_saved(replay_far) -> None:
    rows = [
        {"fluency": -1.0, "first": 2.0, "ratio": 0.85, "unheard": True, "before": 8, "after": 0, "right": True},
        {"fluency": -1.0, "first": 2.0, "ratio": 0.85, "unheard": False, "before": 2, "after": 5, "right": False},
        {"fluency": -0.5, "first": 1.8, "ratio": 0.8, "unheard": True, "before": 6, "after": 2, "right": False},
        {"fluency": -2.0, "first": 2.4, "ratio": 0.5, "unheard": True, "before": 7, "after": 0, "right": True},
        {"fluency": -2.0, "first": 1.9, "ratio": 0.95, "unheard": True, "before": 3, "after": 3, "right": False},
    ]
    assert replay_far.replay(rows, 0.8, 2.25, 0.9, True) == (1, 1, 0, 8)      # the default: the first row only
    assert replay_far.replay(rows, 0.8, 2.25, 0.9, False) == (2, 1, 1, 5)     # without the word test: a harm too
    assert replay_far.replay(rows, 0.35, 2.5, 1.0, True) == (4, 3, 0, 19)


def test_reported_draws_are_refused(replay_far, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        replay_far.main([str(tmp_path / "draw32")])
