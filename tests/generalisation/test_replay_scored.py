"""The dev replays (replay_scored, replay_hub, replay_settings, harm_census): which rows a setting takes or removes,
what they count; reported draws refused."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def replay_scored(protocol_script):
    return protocol_script("replay_scored")


@pytest.fixture(scope="module")
def replay_hub(protocol_script):
    return protocol_script("replay_hub")


def test_scored_replay_counts_by_total_or_per_word_margin_ranked_and_alone(replay_scored) -> None:
    rows = [
        {"margin": -6.0, "words": 8, "first": True, "alone": True, "before": 1, "after": 0},
        {"margin": -9.0, "words": 9, "first": True, "alone": True, "before": 0, "after": 1},    # 1 nat per word
        {"margin": -3.0, "words": 4, "first": False, "alone": True, "before": 2, "after": 0},
        {"margin": -2.0, "words": 5, "first": True, "alone": False, "before": 0, "after": 2},
    ]
    assert replay_scored.replay(rows, 8.0, False, False) == (3, 2, 1, 1)
    assert replay_scored.replay(rows, 8.0, False, False, True) == (2, 2, 0, 3)      # the agreement test
    assert replay_scored.replay(rows, 8.0, False, True) == (2, 1, 1, -1)           # ranked first only
    assert replay_scored.replay(rows, 1.0, True, False) == (4, 2, 2, 0)            # per word: the 9-nat row too


@pytest.mark.parametrize("script", ["replay_scored", "replay_hub", "replay_settings", "harm_census"])
def test_reported_draws_are_refused(protocol_script, script: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        protocol_script(script).main([str(tmp_path / "large")])


def test_settings_replay_counts_only_retrieval_labels(protocol_script) -> None:
    def row(step: str, before: int, after: int, draw: str = "draw41", condition: str = "us-noisy") -> dict:
        return {"step": step, "before": before, "after": after, "pool": f"data/{draw}/unseen-words",
                "condition": condition}

    rows = [row("retrieve/far", 3, 0), row("retrieve/unsure", 1, 2), row("decision/plain", 4, 0),
            row("retrieve/scored", 1, 1)]
    totals = protocol_script("replay_settings").retrieval_totals
    assert totals(rows) == {"changed": 3, "helped": 1, "harmed": 1, "saved": 2, "cells": 0}
    # every step (--steps all); a cell is a draw x condition with two harmed labels or more
    rows += [row("decision/exempt", 2, 5), row("decision/plain", 0, 1, "draw42"), row("retrieve/far", 1, 2, "draw42",
                                                                                     "us-control")]
    assert totals(rows, "") == {"changed": 7, "helped": 2, "harmed": 4, "saved": 1, "cells": 1}
    assert totals(rows) == {"changed": 4, "helped": 1, "harmed": 2, "saved": 1, "cells": 0}


def test_census_overrides_name_a_propagate_setting(protocol_script) -> None:
    import argparse
    census = protocol_script("harm_census")
    assert census.parse_override("retrieve_hub_scale=60") == ("retrieve_hub_scale", 60)
    assert census.parse_override("calibration=[1, 2]") == ("calibration", (1, 2))
    for bad in ("retrieve_hub_scal=60", "retrieve_hub_scale"):
        with pytest.raises(argparse.ArgumentTypeError, match="propagate setting"):
            census.parse_override(bad)
    replay = protocol_script("replay_settings")
    assert replay.parse_setting("-") == {}
    assert replay.parse_setting("retrieve_unsure_hub=4,retrieve_far_hub=4") == {"retrieve_unsure_hub": 4,
                                                                             "retrieve_far_hub": 4}
