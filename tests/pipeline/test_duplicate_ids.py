"""A cut id given twice to any stage is a one-line InputError naming the file, line and id (issue 16).

Before, ``choral run`` caught duplicates (prepare, decode) but the stage commands did not: an export got
31 lines for 30 cuts and eval counted the cut twice. The check is :func:`manifest.check_unique_id`,
applied by :func:`manifest.iter_cuts`, the one manifest reader of every stage.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.errors import InputError
from choral.pipeline.evaluate import evaluate_manifest
from choral.pipeline.export import export_manifest
from choral.pipeline.graph import build_graph
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import check_unique_id, iter_cuts
from choral.pipeline.propagate import propagate_manifest
from choral.pipeline.synthetic import SyntheticCorpus

runner = CliRunner()


def duplicated(manifest: Path, target: Path, index: int = 3) -> tuple[Path, str]:
    """A copy of ``manifest`` whose line ``index`` (0-based) appears again at the end; returns the copy and the
    duplicated cut's id."""
    with gzip.open(manifest, "rt", encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    with gzip.open(target, "wt", encoding="utf-8") as stream:
        stream.write("\n".join([*lines, lines[index]]) + "\n")
    cut_id = [cut.id for cut in iter_cuts(manifest)][index]
    return target, cut_id


@pytest.fixture(scope="module")
def chain(small_corpus: SyntheticCorpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """decoded -> grouped -> graph -> rescored of the small corpus, each stage's real output."""
    run = tmp_path_factory.mktemp("dup-chain")
    group_manifest(small_corpus.decoded, run / "grouped.jsonl.gz")
    build_graph(run / "grouped.jsonl.gz", run / "graph.npz")
    propagate_manifest(run / "grouped.jsonl.gz", run / "graph.npz", run / "rescored.jsonl.gz")
    return {"decoded": small_corpus.decoded, "grouped": run / "grouped.jsonl.gz", "graph": run / "graph.npz",
            "rescored": run / "rescored.jsonl.gz", "references": small_corpus.references}


def expect_duplicate(caught: pytest.ExceptionInfo[InputError], manifest: Path, cut_id: str, n_lines: int) -> None:
    error = caught.value
    assert (error.path, error.cut_id, error.line) == (str(manifest), cut_id, n_lines + 1)
    assert str(error) == f"{manifest}:{n_lines + 1} (cut {cut_id}): duplicate cut id (first on line 4)"


def test_every_stage_refuses_a_duplicated_cut_id(chain: dict[str, Path], small_corpus: SyntheticCorpus,
                                                 tmp_path: Path) -> None:
    n = small_corpus.n_cuts
    decoded, cut_id = duplicated(chain["decoded"], tmp_path / "decoded.jsonl.gz")
    with pytest.raises(InputError) as caught:
        group_manifest(decoded, tmp_path / "out" / "grouped.jsonl.gz")
    expect_duplicate(caught, decoded, cut_id, n)

    grouped, cut_id = duplicated(chain["grouped"], tmp_path / "grouped.jsonl.gz")
    with pytest.raises(InputError) as caught:
        build_graph(grouped, tmp_path / "out" / "graph.npz")
    expect_duplicate(caught, grouped, cut_id, n)
    with pytest.raises(InputError) as caught:
        propagate_manifest(grouped, chain["graph"], tmp_path / "out" / "rescored.jsonl.gz")
    expect_duplicate(caught, grouped, cut_id, n)

    rescored, cut_id = duplicated(chain["rescored"], tmp_path / "rescored.jsonl.gz")
    with pytest.raises(InputError) as caught:
        export_manifest(rescored, tmp_path / "out" / "export")
    expect_duplicate(caught, rescored, cut_id, n)
    with pytest.raises(InputError) as caught:
        evaluate_manifest(rescored, chain["references"], tmp_path / "out" / "eval")
    expect_duplicate(caught, rescored, cut_id, n)
    assert not (tmp_path / "out").exists() or not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_the_export_command_says_it_in_one_line(chain: dict[str, Path], tmp_path: Path) -> None:
    rescored, cut_id = duplicated(chain["rescored"], tmp_path / "rescored.jsonl.gz")
    result = runner.invoke(app, ["export", str(rescored), str(tmp_path / "export")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"choral export: error: {rescored}:")
    assert f"(cut {cut_id}): duplicate cut id" in lines[0]
    assert not (tmp_path / "export").exists()


def test_check_unique_id() -> None:
    seen: dict[str, int] = {}
    check_unique_id(seen, "a", "m.jsonl", 1)
    check_unique_id(seen, "b", "m.jsonl", 2)
    with pytest.raises(InputError, match=r"^m.jsonl:5 \(cut a\): duplicate cut id \(first on line 1\)$"):
        check_unique_id(seen, "a", "m.jsonl", 5)
