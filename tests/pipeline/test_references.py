"""The one references reader: Kaldi ``text``, lhotse supervisions and lhotse cuts give the same references."""

import json
from pathlib import Path

import pytest
from lhotse import MonoCut, Recording, SupervisionSegment

from choral.pipeline.errors import InputError
from choral.pipeline.manifest import write_cuts
from choral.pipeline.references import read_references

TEXTS = {"a": "hello world", "b": "good   morning", "c": "yes"}


def supervision(cut_id: str, text: str | None, **custom: str) -> SupervisionSegment:
    return SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=1.0, text=text,
                              speaker=f"spk-{cut_id}", custom=custom or None)


def write_lines(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in items))
    return path


def texts_of(path: Path) -> dict[str, str]:
    return {cut_id: reference.text for cut_id, reference in read_references(path).items()}


def test_kaldi_text_supervisions_and_cuts_read_alike(tmp_path: Path) -> None:
    kaldi = tmp_path / "text"
    kaldi.write_text("".join(f"{k} {v}\n" for k, v in TEXTS.items()) + "\n")
    supervisions = write_lines(tmp_path / "sups.jsonl", [supervision(k, f" {v} ") for k, v in TEXTS.items()])
    cuts = tmp_path / "cuts.jsonl.gz"
    write_cuts([MonoCut(id=k, start=0.0, duration=1.0, channel=0, supervisions=[supervision(k, v)])
                for k, v in TEXTS.items()], cuts)
    assert texts_of(kaldi) == texts_of(supervisions) == texts_of(cuts) == TEXTS


def test_a_json_manifest_is_recognised_by_its_content(tmp_path: Path) -> None:
    unnamed = write_lines(tmp_path / "references", [supervision("a", "hi there")])
    assert texts_of(unnamed) == {"a": "hi there"}


def test_cut_references_join_supervisions_and_skip_blank_text(tmp_path: Path) -> None:
    cuts = tmp_path / "cuts.jsonl.gz"
    write_cuts([MonoCut(id="a", start=0.0, duration=2.0, channel=0,
                        supervisions=[supervision("a", "first"), supervision("a", " "), supervision("a", "second")]),
                MonoCut(id="b", start=0.0, duration=1.0, channel=0, supervisions=[supervision("b", "  ")]),
                MonoCut(id="c", start=0.0, duration=1.0, channel=0, supervisions=[])], cuts)
    assert texts_of(cuts) == {"a": "first second"}


def test_by_fields_come_from_custom_then_supervision_attributes(tmp_path: Path) -> None:
    supervisions = write_lines(tmp_path / "sups.jsonl", [supervision("a", "x", accent="leeds"), supervision("b", "y")])
    references = read_references(supervisions, by=["accent", "speaker", "gender"])
    assert dict(references["a"].fields) == {"accent": "leeds", "speaker": "spk-a"}
    assert dict(references["b"].fields) == {"speaker": "spk-b"}
    cuts = tmp_path / "cuts.jsonl.gz"
    write_cuts([MonoCut(id="a", start=0.0, duration=1.0, channel=0, supervisions=[supervision("a", "x")],
                        custom={"accent": "us"})], cuts)
    assert dict(read_references(cuts, by=["accent", "speaker"])["a"].fields) == {"accent": "us", "speaker": "spk-a"}


def test_bad_reference_files_name_file_and_line(tmp_path: Path) -> None:
    kaldi = tmp_path / "text"
    kaldi.write_text("a fine\nlonely\n")
    with pytest.raises(InputError) as caught:
        read_references(kaldi)
    assert caught.value.line == 2 and "'lonely' has no transcript" in str(caught.value)
    kaldi.write_text("a fine\nb ok\na again\n")
    with pytest.raises(InputError, match=r"text:3 \(cut a\): a second reference for the same cut id"):
        read_references(kaldi)
    blank = write_lines(tmp_path / "blank.jsonl", [supervision("a", ""), supervision("b", None)])
    with pytest.raises(InputError, match="blank.jsonl: holds no reference text"):
        read_references(blank)
    recording = Recording(id="r", sources=[], sampling_rate=16_000, num_samples=16_000, duration=1.0)
    with pytest.raises(InputError, match=r"recordings.jsonl:1: expected a supervision or a cut, found a Recording"):
        read_references(write_lines(tmp_path / "recordings.jsonl", [recording]))
    with pytest.raises(InputError, match="file not found"):
        read_references(tmp_path / "absent")
