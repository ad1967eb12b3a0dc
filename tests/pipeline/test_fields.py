"""The per-cut schema: the annotated rule on cuts and raw JSON cut dicts, and the custom.choral record."""

from pathlib import Path

import pytest
from lhotse import MonoCut, SupervisionSegment

from choral.pipeline.errors import InputError
from choral.pipeline.fields import (
    SOURCES,
    CutResult,
    choral_entry,
    choral_output,
    field_values,
    is_annotated,
    reference_text,
)


def cut_with(*texts: str | None, custom: dict | None = None) -> MonoCut:
    supervisions = [SupervisionSegment(id=f"s{i}", recording_id="r", start=0.0, duration=1.0, text=text,
                                       speaker="spk", custom={"accent": "sup"})
                    for i, text in enumerate(texts)]
    return MonoCut(id="c", start=0.0, duration=1.0, channel=0, supervisions=supervisions, custom=custom)


@pytest.mark.parametrize("texts, expected", [
    ((), None), ((None,), None), (("",), None), (("  ",), None),
    (("hello",), "hello"), ((" ", "a b", None, "c"), "a b c"),
])
def test_one_annotated_rule_for_cuts_and_raw_json(texts: tuple, expected: str | None) -> None:
    cut = cut_with(*texts)
    assert reference_text(cut) == reference_text(cut.to_dict()) == expected
    assert is_annotated(cut) is is_annotated(cut.to_dict()) is (expected is not None)
    assert not is_annotated({"id": "c"})


def test_cut_result_round_trips_through_custom() -> None:
    result = CutResult("the cat", 0.75, "the bat", "propagated")
    cut = cut_with(custom={"choral": result.to_custom()})
    assert CutResult(**choral_entry(cut, "x.jsonl")) == result
    assert choral_output(cut, "x.jsonl") == ("the cat", "propagated") and result.source in SOURCES
    assert choral_output(cut_with(custom={"choral": [{"text": None}]}), "x.jsonl") == ("", "unknown")
    with pytest.raises(InputError, match=r"x.jsonl \(cut c\): cut has no pseudo-label"):
        choral_entry(cut_with(), Path("x.jsonl"))
    with pytest.raises(InputError, match="must be a list of one"):
        choral_entry(cut_with(custom={"choral": [{"confidence": 1.0}]}), "x.jsonl")


def test_field_values_prefer_cut_custom_then_supervision_attributes_then_their_custom() -> None:
    assert field_values(cut_with("a", custom={"accent": "cut"}), ["accent", "speaker", "gender"]) == \
        {"accent": "cut", "speaker": "spk"}
    assert field_values(cut_with("a"), ["accent"]) == {"accent": "sup"}


@pytest.mark.parametrize("score", [float("nan"), float("inf"), -float("inf"), "high", None, True])
def test_nbest_scores_must_be_finite_numbers(score: object) -> None:
    """+Infinity was a ValueError deep in propagation, -Infinity numpy warnings and confidence 0 (issue 16)."""
    from choral.pipeline.fields import nbest

    cut = cut_with(None, custom={"nbest": [{"text": "a", "score": -1.0}, {"text": "b", "score": score}]})
    with pytest.raises(InputError) as caught:
        nbest(cut, "decoded.jsonl.gz")
    assert str(caught.value) == (f"decoded.jsonl.gz (cut c): custom.nbest[1].score must be a finite "
                                 f"log-probability, not {score!r}")


def test_infinite_score_in_a_manifest_stops_the_graph_stage_in_one_line(tmp_path: Path) -> None:
    import gzip
    import json

    from typer.testing import CliRunner

    from choral.cli.app import app

    grouped = tmp_path / "grouped.jsonl.gz"
    cut = cut_with(None, custom={"nbest": [{"text": "a", "score": 1.0}], "group": "g1"}).to_dict()
    line = json.dumps(cut).replace('"score": 1.0', '"score": Infinity')
    with gzip.open(grouped, "wt") as stream:
        stream.write(line + "\n")
    result = CliRunner().invoke(app, ["graph", str(grouped), str(tmp_path / "graph.npz")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"choral graph: error: {grouped} (cut c): custom.nbest[0].score must be a "
                                     "finite log-probability, not inf")
