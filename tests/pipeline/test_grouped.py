"""The grouped-manifest reader shared by the graph and propagate stages."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import MonoCut, SupervisionSegment

from choral.pipeline.errors import InputError
from choral.pipeline.grouped import iter_grouped
from choral.pipeline.manifest import write_cuts
from choral.pipeline.propagate import read_entries
from choral.pipeline.text import TextNormalizer


def cut(cut_id: str, custom: dict, reference: str | None = None) -> MonoCut:
    supervisions = [SupervisionSegment(id=f"{cut_id}-s", recording_id=cut_id, start=0.0, duration=1.0,
                                       text=reference)] if reference is not None else []
    return MonoCut(id=cut_id, start=0.0, duration=1.0, channel=0, supervisions=supervisions, custom=custom)


NBEST = [{"text": "Hello World", "score": -1.0}, {"text": "hello word", "score": -2.5}]


def test_records_in_manifest_order(tmp_path: Path) -> None:
    path = tmp_path / "grouped.jsonl.gz"
    write_cuts([cut("a", {"group": "g0000001", "nbest": NBEST}, reference="Hello World"),
                cut("b", {"group": "s0000002", "nbest": NBEST[:1]})], path)
    records = list(iter_grouped(path))
    assert [r.cut.id for r in records] == ["a", "b"]
    assert [r.group for r in records] == ["g0000001", "s0000002"]
    assert [h.text for h in records[0].hypotheses] == ["Hello World", "hello word"]
    assert records[0].hypotheses[1].score == -2.5
    assert records[0].reference == "Hello World" and records[1].reference is None

    entries = read_entries(path, TextNormalizer())
    assert entries[0].hypotheses == ["hello world", "hello word"]
    assert entries[0].reference == "hello world" and entries[0].reference_original == "Hello World"


@pytest.mark.parametrize("custom, message", [
    ({"nbest": NBEST}, "cut has no custom.group; run `choral group` first"),
    ({"group": "g0000001"}, "cut has no n-best hypotheses"),
    ({"group": "g0000001", "nbest": [{"text": "x"}]}, r"custom.nbest\[0\] needs 'text' and 'score'"),
])
def test_graph_and_propagate_reject_the_same_way(tmp_path: Path, custom: dict, message: str) -> None:
    path = tmp_path / "grouped.jsonl.gz"
    write_cuts([cut("a", custom)], path)
    with pytest.raises(InputError, match=message) as from_reader:
        list(iter_grouped(path))
    with pytest.raises(InputError) as from_propagate:
        read_entries(path, TextNormalizer())
    assert str(from_propagate.value) == str(from_reader.value)
    assert from_reader.value.cut_id == "a"
