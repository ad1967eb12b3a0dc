"""The JSON fast path of propagate, tune, export and eval (issue 14): the same records, the same bytes
as the lhotse-object path, and outputs a user's lhotse reads."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.cut import Cut
from lhotse.serialization import deserialize_item

from choral.pipeline.errors import InputError
from choral.pipeline.export import Label, export_manifest
from choral.pipeline.export.lhotse_cuts import training_cut, training_dict
from choral.pipeline.fields import field_values
from choral.pipeline.graph import CutGraph
from choral.pipeline.grouped import iter_grouped, iter_grouped_fields
from choral.pipeline.manifest import write_cuts
from choral.pipeline.propagate import PropagateConfig, propagate_manifest, read_entries, read_grouped_and_graph
from choral.pipeline.propagate.stage import subgraph
from choral.pipeline.text import TextNormalizer


def make_cut(cut_id: str, group: str, reference: str | None = None, *, recording: bool = True,
             nbest: list[dict] | None = None, **custom: object) -> MonoCut:
    rec = Recording(id=f"rec-{cut_id}", sources=[AudioSource(type="file", channels=[0], source=f"/a/{cut_id}.wav")],
                    sampling_rate=16000, num_samples=32000, duration=2.0) if recording else None
    supervisions = [SupervisionSegment(id=f"{cut_id}-s", recording_id=f"rec-{cut_id}", start=0.0, duration=1.5,
                                       text=reference, speaker="spk" if reference else None, language="en",
                                       custom={"accent": "scot"})]
    return MonoCut(id=cut_id, start=0.25, duration=1.5, channel=0, recording=rec, supervisions=supervisions,
                   custom={"nbest": nbest or [{"text": "Hello World", "tokens": [1, 2], "score": -1.0},
                                              {"text": "hello word", "tokens": [1], "score": -2.5}],
                           "group": group, "group_size": 2, **custom})


@pytest.fixture()
def grouped(tmp_path: Path) -> tuple[Path, Path]:
    """Six cuts in three groups (g1 and g3 hold an annotated cut) and a graph linking pairs within groups."""
    cuts = [make_cut("a", "g1", "Hello World"), make_cut("b", "g1"), make_cut("c", "g2"), make_cut("d", "g2"),
            make_cut("e", "g3"), make_cut("f", "g3", "hello word", recording=False)]
    path = tmp_path / "grouped.jsonl.gz"
    write_cuts(cuts, path)
    graph = CutGraph(cut_ids=np.array([c.id for c in cuts]), pair_a=np.array([0, 2, 4]), pair_b=np.array([1, 3, 5]),
                     distances=np.array([0.1, 0.2, 0.3]), threshold=0.25, metric="cosine")
    graph.save(tmp_path / "graph.npz")
    return path, tmp_path / "graph.npz"


def test_fields_reader_gives_the_records_of_the_lhotse_reader(grouped: tuple[Path, Path]) -> None:
    path, _ = grouped
    slow, fast = list(iter_grouped(path)), list(iter_grouped_fields(path))
    assert [(r.cut.id, r.group, r.hypotheses, r.reference) for r in slow] == \
           [(r.cut_id, r.group, r.hypotheses, r.reference) for r in fast]
    skipped = list(iter_grouped_fields(path, keep=lambda group: group == "g2"))
    assert [len(r.hypotheses) for r in skipped] == [0, 0, 2, 2, 0, 0]
    assert [r.reference for r in skipped] == [r.reference for r in fast]  # references are read for every cut


def test_tune_reads_only_annotated_groups_and_their_subgraph(grouped: tuple[Path, Path]) -> None:
    path, graph_file = grouped
    full, graph = read_grouped_and_graph(path, graph_file, TextNormalizer())
    part, sub = read_grouped_and_graph(path, graph_file, TextNormalizer(), annotated_groups_only=True)
    rows = np.array([0, 1, 4, 5])
    assert [e.cut_id for e in part] == ["a", "b", "e", "f"]
    assert [e.hypotheses for e in part] == [full[i].hypotheses for i in rows]
    assert list(sub.cut_ids) == ["a", "b", "e", "f"]
    for kwargs in ({}, {"weighted": True}, {"nearest": 1}, {"threshold": 0.5}):
        assert (sub.adjacency(**kwargs) != graph.adjacency(**kwargs)[rows][:, rows]).nnz == 0
    whole = subgraph(graph, np.arange(6))  # all rows: the same graph
    for name in ("cut_ids", "pair_a", "pair_b", "distances"):
        assert np.array_equal(getattr(whole, name), getattr(graph, name))


def test_a_graph_of_other_cuts_is_rejected_by_both_readers(grouped: tuple[Path, Path], tmp_path: Path) -> None:
    path, graph_file = grouped
    other = CutGraph.load(graph_file)
    replace(other, cut_ids=other.cut_ids[::-1]).save(tmp_path / "other.npz")
    for only in (False, True):
        with pytest.raises(InputError, match="do not match"):
            read_grouped_and_graph(path, tmp_path / "other.npz", TextNormalizer(), annotated_groups_only=only)


def test_propagate_writes_each_line_as_lhotse_would_with_the_label_added(grouped: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    path, graph_file = grouped
    out = tmp_path / "rescored.jsonl.gz"
    propagate_manifest(path, graph_file, out, PropagateConfig())
    written = [json.loads(line) for line in gzip.open(out, "rt")]
    for line, cut in zip(written, CutSet.from_file(path)):
        expected = cut.to_dict()
        expected["custom"]["choral"] = line["custom"]["choral"]
        assert line == expected
    assert [c.id for c in CutSet.from_file(out)] == ["a", "b", "c", "d", "e", "f"]  # lhotse reads it
    assert len(read_entries(out, TextNormalizer())) == 6


@pytest.mark.parametrize("reference", [None, "A reference"])
def test_training_dict_is_training_cut_to_dict(reference: str | None) -> None:
    label = Label("the label", 0.75, "the teacher", "reference" if reference else "propagated")
    for cut in (make_cut("x", "g1", reference, extra="kept"), make_cut("y", "g1", reference, recording=False)):
        expected = training_cut(cut, label).to_dict()
        assert training_dict(json.loads(json.dumps(cut.to_dict())), label) == expected
        assert isinstance(deserialize_item(expected), Cut)


def test_field_values_of_a_cut_dict_are_those_of_the_cut() -> None:
    cut = make_cut("x", "g1", "ref", accent="cut-level")
    names = ["accent", "speaker", "language", "gender", "group"]
    assert field_values(cut.to_dict(), names) == field_values(cut, names)
    bare = make_cut("y", "g1")
    assert field_values(bare.to_dict(), names) == field_values(bare, names) == \
           {"accent": "scot", "language": "en", "group": "g1"}


def test_export_refuses_a_cut_that_is_not_of_one_recording(tmp_path: Path) -> None:
    mono = make_cut("a", "g1", custom_choral=None)
    data = mono.to_dict()
    data["custom"]["choral"] = [{"text": "x", "confidence": 0.5, "teacher_text": "x", "source": "teacher"}]
    mixed = dict(data, id="m", type="MixedCut")
    path = tmp_path / "rescored.jsonl"
    path.write_text(json.dumps(data) + "\n" + json.dumps(mixed) + "\n")
    with pytest.raises(InputError, match=r"\(cut m\): export needs cuts of a single recording, found a MixedCut"):
        export_manifest(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
