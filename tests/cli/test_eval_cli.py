import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.fields import is_annotated, nbest, reference_text
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.synthetic import SyntheticCorpus

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def rescored(small_corpus: SyntheticCorpus, tmp_path: Path) -> Path:
    """The synthetic corpus 'rescored': choral fixes every third unannotated cut, keeps the 1-best otherwise."""
    cuts = []
    for index, cut in enumerate(read_cuts(small_corpus.decoded)):
        teacher = nbest(cut, small_corpus.decoded)[0].text
        text = reference_text(cut) or (small_corpus.reference_of_cut[cut.id] if index % 3 == 0 else teacher)
        source = "reference" if is_annotated(cut) else "propagated" if index % 3 == 0 else "teacher"
        cut.custom["choral"] = [{"text": text, "confidence": 1.0, "teacher_text": teacher, "source": source}]
        cuts.append(cut)
    path = tmp_path / "rescored.jsonl.gz"
    write_cuts(cuts, path)
    return path


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def error_lines(result) -> list[str]:
    """stderr lines other than the progress bar's (which rich leaves behind when stderr is not a terminal)."""
    return [line for line in stderr_lines(result) if "━" not in line]


def test_eval_writes_report_and_prints_table(rescored: Path, small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = invoke("eval", rescored, "--references", small_corpus.references, "--by", "accent", "--by", "speaker",
                    "--out", out)
    assert result.exit_code == 0, result.output
    for text in ("unannotated cuts (headline)", "annotated cuts", "teacher", "choral", "oracle", "reduction",
                 "overall", "accent = scotland", "speaker = us-00", "propagated"):
        assert text in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["unannotated"]["choral"]["by"]) == {"accent", "speaker"}
    assert report["unannotated"]["choral"]["wer"] < report["unannotated"]["teacher"]["wer"]
    assert (out / "report.md").read_text().startswith("# choral eval")
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("help / harm / calibration", "help rate", "harm rate", "ECE", "calibration of the confidence",
                 "0.9-1.0"):
        assert text in result.stdout


def test_eval_help_harm_and_calibration_match_the_cuts(rescored: Path, small_corpus: SyntheticCorpus,
                                                       tmp_path: Path) -> None:
    """The fixture never makes a label worse and gives every label confidence 1.0, so harm is 0, help is the
    share of fixed cuts the teacher got wrong, and ECE = 1 - accuracy (one bin, confidence 1)."""
    from choral.pipeline.text import TextNormalizer

    normalize = TextNormalizer()
    n, helped, correct = 0, 0, 0
    for cut in read_cuts(rescored):
        if is_annotated(cut):
            continue
        reference = normalize(small_corpus.reference_of_cut[cut.id])
        label, teacher = cut.custom["choral"][0]["text"], cut.custom["choral"][0]["teacher_text"]
        n += 1
        correct += normalize(label) == reference
        helped += normalize(label) == reference and normalize(teacher) != reference
    assert 0 < helped < n
    out = tmp_path / "eval"
    result = invoke("eval", rescored, "--references", small_corpus.references, "--out", out)
    assert result.exit_code == 0, result.output
    split = json.loads((out / "report.json").read_text())["unannotated"]
    assert split["n_harmed"] == 0 and split["harm_rate"] == 0.0
    assert split["n_helped"] == helped and split["help_rate"] == pytest.approx(helped / n)
    assert split["calibration"]["bins"][9]["n"] == n
    assert split["ece"] == pytest.approx(1 - correct / n)
    markdown = (out / "report.md").read_text()
    assert f"| 0.9-1.0 | {n:,} | 1.000 | {correct / n:.3f} |" in markdown


def test_eval_skips_an_up_to_date_report_unless_forced(rescored: Path, small_corpus: SyntheticCorpus,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ("eval", rescored, "--references", small_corpus.references, "--by", "accent", "--out", out)
    assert invoke(*args).exit_code == 0
    written = (out / "report.json").stat().st_mtime_ns
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert f"choral eval: {out} is up to date" in again.stdout and "skipped" in again.stdout
    assert "WER" not in again.stdout and (out / "report.json").stat().st_mtime_ns == written
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert "up to date" not in forced.stdout and "unannotated cuts (headline)" in forced.stdout
    assert (out / "report.json").stat().st_mtime_ns != written


def test_missing_input_is_one_line_exit_1_and_nothing_written(small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = invoke("eval", tmp_path / "nope.jsonl.gz", "--references", small_corpus.references, "--out", out)
    assert result.exit_code == 1
    lines = stderr_lines(result)
    assert len(lines) == 1 and "nope.jsonl.gz: file not found" in lines[0]
    assert not out.exists()


def test_missing_reference_fails_unless_allowed(rescored: Path, small_corpus: SyntheticCorpus,
                                                tmp_path: Path) -> None:
    lines = gzip.decompress(small_corpus.references.read_bytes()).decode().splitlines(keepends=True)
    missing = json.loads(lines[0])["id"]
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(lines[1:]))
    out = tmp_path / "eval"
    result = invoke("eval", rescored, "-r", refs, "-o", out)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and f"(cut {missing})" in lines[0] and "--allow-missing" in lines[0]
    assert not out.exists()
    result = invoke("eval", rescored, "-r", refs, "-o", out, "--allow-missing")
    assert result.exit_code == 0, result.output
    assert "skipped 1 cuts without a reference" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["unannotated"]["n_missing_references"] + report["annotated"]["n_missing_references"] == 1


def test_help_and_bad_digits(rescored: Path, small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    result = invoke("eval", "--help")
    assert result.exit_code == 0
    assert "oracle" in result.stdout and "--references" in result.stdout and "--by" in result.stdout
    result = invoke("eval", rescored, "-r", small_corpus.references, "-o", tmp_path / "e", "--digits", "words")
    assert result.exit_code == 2
