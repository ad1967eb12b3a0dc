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
