import gzip
import json
import os
from pathlib import Path

import pytest
from lhotse import MonoCut

from choral.pipeline.errors import InputError
from choral.pipeline.manifest import CutWriter, atomic_output, iter_cuts, read_cuts, temporary_name, write_cuts


def make_cut(cut_id: str) -> MonoCut:
    return MonoCut(id=cut_id, start=0.0, duration=1.0, channel=0, custom={"nbest": [{"text": "hi", "score": -1.0}]})


def test_round_trip_gz_and_plain(tmp_path: Path) -> None:
    for name in ("cuts.jsonl.gz", "cuts.jsonl"):
        assert write_cuts([make_cut("a"), make_cut("b")], tmp_path / name) == 2
        assert [c.id for c in read_cuts(tmp_path / name)] == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuts.jsonl", "cuts.jsonl.gz"]


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl.gz"
    with pytest.raises(RuntimeError):
        with CutWriter(target) as writer:
            writer.write(make_cut("a"))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_suffixes_and_renames(tmp_path: Path) -> None:
    target = tmp_path / "graph.npz"
    assert temporary_name(target).name.endswith(".npz")
    names = {temporary_name(target).name for _ in range(20)}  # unpredictable: no symlink can wait for it
    assert len(names) == 20 and all(name.startswith(f".graph.tmp.{os.getpid()}.") for name in names)
    with atomic_output(target) as tmp:
        tmp.write_text("x")
        assert not target.exists()
    assert target.read_text() == "x"


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as stream:
        stream.write(json.dumps(make_cut("a").to_dict()) + "\n")
        stream.write("{not json\n")
    with pytest.raises(InputError, match=r"bad.jsonl.gz:2: malformed JSON"):
        list(iter_cuts(path))


def test_missing_empty_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        list(iter_cuts(tmp_path / "nope.jsonl.gz"))
    empty = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty, "wt"):
        pass
    with pytest.raises(InputError, match="holds no cuts"):
        list(iter_cuts(empty))
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(InputError, match="cannot read"):
        list(iter_cuts(corrupt))
    not_a_cut = tmp_path / "list.jsonl"
    not_a_cut.write_text("[1, 2]\n")
    with pytest.raises(InputError, match=":1: expected a JSON object"):
        list(iter_cuts(not_a_cut))
