import os
from pathlib import Path

from choral.pipeline.meta import StageRecord, is_up_to_date, meta_path, write_meta


def test_up_to_date_only_when_inputs_params_and_outputs_match(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a")
    output = tmp_path / "out.txt"
    record = StageRecord.create("stage", [source], {"alpha": 0.5}, [output])
    assert not is_up_to_date(record, output)  # nothing written yet
    output.write_text("result")
    write_meta(record, output)
    assert meta_path(output).exists()
    assert is_up_to_date(StageRecord.create("stage", [source], {"alpha": 0.5}, [output]), output)
    assert not is_up_to_date(StageRecord.create("stage", [source], {"alpha": 0.6}, [output]), output)
    source.write_text("changed input")
    os.utime(source, ns=(1, 1))
    assert not is_up_to_date(StageRecord.create("stage", [source], {"alpha": 0.5}, [output]), output)


def test_missing_output_is_not_up_to_date(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a")
    output = tmp_path / "out.txt"
    output.write_text("x")
    record = StageRecord.create("stage", [source], {}, [output])
    write_meta(record, output)
    output.unlink()
    assert not is_up_to_date(record, output)


def test_stale_reason_says_what_changed(tmp_path: Path) -> None:
    from dataclasses import replace

    from choral.pipeline.meta import stale_reason

    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("a")
    record = StageRecord.create("stage", [source], {"alpha": 0.5, "beta": 1}, [output])
    assert stale_reason(record, output) == f"output {output} does not exist"
    output.write_text("result")
    assert stale_reason(record, output).startswith("no readable record of the last run")
    write_meta(record, output)
    assert stale_reason(record, output) is None
    assert stale_reason(StageRecord.create("stage", [source], {"alpha": 0.6, "beta": 1}, [output]), output) == \
        "parameters changed (alpha)"
    assert stale_reason(replace(record, version="0.0.0-other"), output).startswith("choral version changed")
    source.write_text("changed input")
    os.utime(source, ns=(1, 1))
    assert stale_reason(StageRecord.create("stage", [source], {"alpha": 0.5, "beta": 1}, [output]), output) == \
        f"input {source.resolve()} is new or changed"
