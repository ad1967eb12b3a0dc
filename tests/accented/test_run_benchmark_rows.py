"""``run_benchmark.py --only``: the rows of variants it did not redo are kept from the previous RESULTS.md."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "accented"


@pytest.fixture(scope="module")
def rb():
    sys.path.insert(0, str(BENCH))
    try:
        import run_benchmark
        yield run_benchmark
    finally:
        sys.path.remove(str(BENCH))


def test_kept_rows_take_the_variants_not_redone_and_the_previous_main(rb, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    assert rb.kept_rows(results, set()) == []
    names = [v.name for v in rb.VARIANTS]
    results.write_text("\n".join([
        "| variant | cuts |", "|---|---:|",
        "| main (dtw-frames, 10% annotated) | 2,673 |",
        f"| {names[1]} | 2,673 |", f"| {names[0]} | 2,673 |", "| not a variant | 1 |",
    ]))
    kept = rb.kept_rows(results, {names[1]})
    assert kept == ["| previous run's main (dtw-frames, 10% annotated) | 2,673 |", f"| {names[0]} | 2,673 |"]
    assert rb.kept_rows(results, {names[0], names[1]}) == []     # nothing kept: no previous main either


def test_part_four_variants_are_valid_settings(rb) -> None:
    from choral.pipeline.propagate import PropagateConfig
    from choral.pipeline.tune import TuneConfig

    for variant in rb.VARIANTS:
        PropagateConfig(**dict(variant.propagate))
        TuneConfig(nearest=variant.tune_nearest)
    slugs = [v.name.split(" (")[0].replace(" ", "-").replace("%", "pct") for v in rb.VARIANTS]
    assert len(set(slugs)) == len(slugs)
