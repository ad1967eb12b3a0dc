import gzip
import json
from pathlib import Path

import pytest
from lhotse import MonoCut, SupervisionSegment

from choral.pipeline.errors import ChoralError, InputError
from choral.pipeline.evaluate import SYSTEMS, evaluate, evaluate_manifest, score_cut, write_report
from choral.pipeline.fields import is_annotated, nbest, reference_text
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.synthetic import SyntheticCorpus
from choral.pipeline.text import TextNormalizer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_cut(cut_id: str, hypotheses: list[str], label: str, *, source: str = "propagated",
             accent: str | None = "us", speaker: str = "spk1", annotated: str | None = None,
             confidence: object = 0.9) -> MonoCut:
    """A rescored cut without audio: n-best, choral label, optional accent and supervision text."""
    choral: dict = {"text": label, "teacher_text": hypotheses[0], "source": source}
    if confidence is not None:
        choral["confidence"] = confidence
    custom: dict = {"nbest": [{"text": t, "tokens": [], "score": -float(i)} for i, t in enumerate(hypotheses)],
                    "choral": [choral]}
    if accent is not None:
        custom["accent"] = accent
    supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=1.0, text=annotated,
                                     speaker=speaker)
    return MonoCut(id=cut_id, start=0.0, duration=1.0, channel=0, supervisions=[supervision], custom=custom)


def write_supervisions(path: Path, references: dict[str, str], custom: dict[str, dict] | None = None) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as stream:
        for cut_id, text in references.items():
            segment = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=1.0, text=text,
                                         custom=(custom or {}).get(cut_id))
            stream.write(json.dumps(segment.to_dict()) + "\n")
    return path


REFERENCES = {"a": "The cat, sat.", "b": "turn on the lights", "c": "play jazz", "d": "call 26"}


@pytest.fixture()
def hand_built(tmp_path: Path) -> tuple[Path, Path]:
    """Four cuts with hand-countable errors; ``c`` is annotated."""
    cuts = [
        make_cut("a", ["the bat sat", "the cat sat"], "the cat sat", accent="us"),            # T 1, C 0, O 0 / 3
        make_cut("b", ["turn off the light", "turn off the lights"], "turn off the lights",
                 accent="scotland", speaker="spk2"),                                          # T 2, C 1, O 1 / 4
        make_cut("c", ["play jess", "play chess"], "play jazz", source="reference",
                 annotated="play jazz"),                                                      # T 1, C 0, O 1 / 2
        make_cut("d", ["call two six"], "call two sex", accent="scotland", source="teacher"),  # T 0, C 1, O 0 / 3
    ]
    rescored = tmp_path / "rescored.jsonl.gz"
    write_cuts(cuts, rescored)
    return rescored, write_supervisions(tmp_path / "refs.jsonl.gz", REFERENCES)


def test_score_cut_normalises_and_picks_oracle() -> None:
    score = score_cut("The cat, sat.", "the bat sat", "THE CAT SAT!", ["the bat sat", "a cat sat", "the cat"],
                      TextNormalizer())
    assert score.n_words == 3
    assert dict(score.errors) == {"teacher": 1, "choral": 0, "oracle": 1}


def test_hand_computed_wers(hand_built: tuple[Path, Path]) -> None:
    report = evaluate(*hand_built, by=["accent"]).to_dict()
    unannotated, annotated = report["unannotated"], report["annotated"]
    assert unannotated["n_cuts"] == 3 and unannotated["n_words"] == 10
    assert unannotated["teacher"]["wer"] == pytest.approx(3 / 10)
    assert unannotated["choral"]["wer"] == pytest.approx(2 / 10)
    assert unannotated["oracle"]["wer"] == pytest.approx(1 / 10)
    assert unannotated["relative_wer_reduction"] == pytest.approx(1 / 3)
    assert unannotated["teacher"]["by"]["accent"] == pytest.approx({"us": 1 / 3, "scotland": 2 / 7})
    assert unannotated["choral"]["by"]["accent"] == pytest.approx({"us": 0.0, "scotland": 2 / 7})
    assert unannotated["sources"] == {"reference": 0, "propagated": 2, "teacher": 1}
    scotland = unannotated["breakdown"]["accent"]["scotland"]
    assert {key: scotland[key] for key in ("n_cuts", "n_words", "relative_wer_reduction")} == {
        "n_cuts": 2, "n_words": 7, "relative_wer_reduction": 0.0}
    # b: teacher 2, choral 1 errors (helped); d: teacher 0, choral 1 (harmed)
    assert (scotland["n_helped"], scotland["n_harmed"]) == (1, 1)
    assert scotland["help_rate"] == 0.5 and scotland["harm_rate"] == 0.5
    # a helped, b helped, d harmed -> 2/3 and 1/3 of the 3 unannotated cuts
    assert unannotated["help_rate"] == pytest.approx(2 / 3) and unannotated["harm_rate"] == pytest.approx(1 / 3)
    # every confidence is 0.9 (bin 9); correct labels: a only (b has 1 error, d 1 error) -> |1/3 - 0.9|
    assert unannotated["ece"] == pytest.approx(abs(1 / 3 - 0.9))
    assert unannotated["calibration"]["bins"][9] == {"lower": 0.9, "upper": 1.0, "n": 3,
                                                     "confidence": pytest.approx(0.9),
                                                     "accuracy": pytest.approx(1 / 3)}
    assert scotland["ece"] == pytest.approx(0.9)  # neither b nor d is correct
    assert annotated["help_rate"] == 1.0 and annotated["harm_rate"] == 0.0
    assert annotated["ece"] == pytest.approx(0.1)
    assert annotated["n_cuts"] == 1 and annotated["n_words"] == 2
    assert annotated["teacher"]["wer"] == pytest.approx(0.5) and annotated["choral"]["wer"] == 0.0
    assert annotated["oracle"]["wer"] == pytest.approx(0.5)
    assert annotated["relative_wer_reduction"] == pytest.approx(1.0)
    assert annotated["sources"]["reference"] == 1


def test_report_json_shape(hand_built: tuple[Path, Path], tmp_path: Path) -> None:
    paths = write_report(evaluate(*hand_built, by=["accent", "speaker"]), tmp_path / "eval")
    report = json.loads(paths.json.read_text())
    assert list(report) == ["unannotated", "annotated"]
    for split in report.values():
        assert {"teacher", "choral", "oracle", "relative_wer_reduction", "n_cuts", "n_words"} <= set(split)
        assert isinstance(split["relative_wer_reduction"], float)
        assert isinstance(split["n_cuts"], int) and isinstance(split["n_words"], int)
        for system in SYSTEMS:
            assert set(split[system]) == {"wer", "by"} and isinstance(split[system]["wer"], float)
            assert list(split[system]["by"]) == ["accent", "speaker"]
            for values in split[system]["by"].values():
                assert all(isinstance(k, str) and isinstance(v, float) for k, v in values.items())
    assert set(report["unannotated"]["teacher"]["by"]["speaker"]) == {"spk1", "spk2"}
    assert sorted(p.name for p in paths.json.parent.iterdir()) == ["report.json", "report.md", "report.png"]


def test_markdown_and_png_written(hand_built: tuple[Path, Path], tmp_path: Path) -> None:
    paths = write_report(evaluate(*hand_built, by=["accent"]), tmp_path)
    markdown = paths.markdown.read_text()
    assert "## Unannotated cuts (headline)" in markdown and "## Annotated cuts" in markdown
    assert "| overall | 3 | 10 | 30.00% | 20.00% | 10.00% | 33.33% | 66.67% | 33.33% | 0.567 |" in markdown
    assert "**ECE 0.567**" in markdown
    assert "| 0.9-1.0 | 3 | 0.900 | 0.333 | -0.567 |" in markdown
    assert "| 0.0-0.1 | 0 | - | - | - |" in markdown
    assert "| accent = scotland | 2 | 7 |" in markdown
    assert "propagated 2" in markdown
    assert paths.chart.read_bytes().startswith(PNG_MAGIC)


def test_by_falls_back_to_supervision_and_reference_fields(tmp_path: Path) -> None:
    rescored = tmp_path / "rescored.jsonl.gz"
    write_cuts([make_cut("a", ["x y"], "x y", accent=None, speaker="s1"),
                make_cut("b", ["x y"], "x z", accent=None, speaker="s2")], rescored)
    refs = write_supervisions(tmp_path / "refs.jsonl.gz", {"a": "x y", "b": "x y"}, {"a": {"accent": "leeds"}})
    report = evaluate(rescored, refs, by=["accent", "speaker", "gender"]).to_dict()["unannotated"]
    assert report["choral"]["by"]["accent"] == {"leeds": 0.0, "unknown": 0.5}
    assert report["choral"]["by"]["speaker"] == {"s1": 0.0, "s2": 0.5}
    assert report["choral"]["by"]["gender"] == {"unknown": 0.25}


def test_missing_reference_names_cut_unless_allowed(hand_built: tuple[Path, Path], tmp_path: Path) -> None:
    rescored, _ = hand_built
    partial = write_supervisions(tmp_path / "partial.jsonl.gz", {k: v for k, v in REFERENCES.items() if k != "b"})
    with pytest.raises(InputError) as caught:
        evaluate(rescored, partial)
    assert caught.value.cut_id == "b" and "partial.jsonl.gz" in str(caught.value)
    assert "(cut b)" in str(caught.value) and "\n" not in str(caught.value)
    report = evaluate(rescored, partial, allow_missing=True).to_dict()
    assert report["unannotated"]["n_missing_references"] == 1
    assert report["unannotated"]["n_cuts"] == 2 and report["unannotated"]["n_words"] == 6


def test_references_as_cut_manifest(hand_built: tuple[Path, Path], tmp_path: Path) -> None:
    rescored, supervisions = hand_built
    cut_refs = tmp_path / "ref_cuts.jsonl.gz"
    write_cuts([make_cut(k, ["?"], "?", accent=None, annotated=v) for k, v in REFERENCES.items()], cut_refs)
    assert evaluate(rescored, cut_refs, by=["accent"]).to_dict() == \
        evaluate(rescored, supervisions, by=["accent"]).to_dict()


def test_bad_inputs_name_file_and_cut(hand_built: tuple[Path, Path], tmp_path: Path) -> None:
    rescored, refs = hand_built
    cut = make_cut("z", ["a"], "a")
    del cut.custom["choral"]
    unrescored = tmp_path / "unrescored.jsonl.gz"
    write_cuts([cut], unrescored)
    with pytest.raises(InputError, match=r"unrescored.jsonl.gz \(cut z\): .*custom.choral"):
        evaluate(unrescored, refs)
    duplicated = tmp_path / "dup.jsonl"
    duplicated.write_text("".join(json.dumps(SupervisionSegment(id="a", recording_id="a", start=0, duration=1,
                                                                 text="x").to_dict()) + "\n" for _ in range(2)))
    with pytest.raises(InputError, match=r"dup.jsonl:2 \(cut a\): a second reference"):
        evaluate(rescored, duplicated)
    with pytest.raises(InputError, match="file not found"):
        evaluate(rescored, tmp_path / "nope.jsonl.gz")


def test_empty_split_reports_zero(tmp_path: Path) -> None:
    rescored = tmp_path / "rescored.jsonl.gz"
    write_cuts([make_cut("a", ["x y"], "x y")], rescored)
    report = evaluate(rescored, write_supervisions(tmp_path / "r.jsonl", {"a": "x y"}), by=["accent"])
    annotated = report.to_dict()["annotated"]
    assert annotated["n_cuts"] == 0 and annotated["teacher"]["wer"] == 0.0
    assert annotated["teacher"]["by"] == {"accent": {}}
    assert "No cuts in this split." in write_report(report, tmp_path / "out").markdown.read_text()


def rescore_synthetic(corpus: SyntheticCorpus, path: Path) -> Path:
    """A rescored manifest from synthetic decoded cuts: choral fixes even-numbered prompts, else keeps the 1-best."""
    cuts = []
    for cut in read_cuts(corpus.decoded):
        teacher = nbest(cut, corpus.decoded)[0].text
        fixed = corpus.prompt_of_cut[cut.id] % 2 == 0 or is_annotated(cut)
        text = reference_text(cut) or (corpus.reference_of_cut[cut.id] if fixed else teacher)
        source = "reference" if is_annotated(cut) else "propagated" if fixed else "teacher"
        cut.custom["choral"] = [{"text": text, "confidence": 1.0, "teacher_text": teacher, "source": source}]
        cuts.append(cut)
    write_cuts(cuts, path)
    return path


def test_synthetic_corpus_breakdowns(small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    rescored = rescore_synthetic(small_corpus, tmp_path / "rescored.jsonl.gz")
    report = evaluate(rescored, small_corpus.references, by=["accent", "speaker"]).to_dict()
    n_annotated = sum(is_annotated(cut) for cut in read_cuts(small_corpus.decoded))
    assert report["annotated"]["n_cuts"] == n_annotated > 0
    assert report["unannotated"]["n_cuts"] + n_annotated == small_corpus.n_cuts
    assert report["annotated"]["choral"]["wer"] == 0.0
    for split in report.values():
        assert split["oracle"]["wer"] <= split["teacher"]["wer"]
        assert split["choral"]["wer"] <= split["teacher"]["wer"]
        for accent, wer in split["teacher"]["by"]["accent"].items():
            assert split["oracle"]["by"]["accent"][accent] <= wer
    unannotated = report["unannotated"]
    assert set(unannotated["teacher"]["by"]["accent"]) == {"us", "england", "scotland", "caribbean"}
    assert len(unannotated["teacher"]["by"]["speaker"]) == 8
    assert unannotated["teacher"]["by"]["accent"]["us"] < unannotated["teacher"]["by"]["accent"]["scotland"]
    assert unannotated["relative_wer_reduction"] > 0.2


def test_write_report_into_a_file_fails_cleanly(hand_built: tuple[Path, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "report"
    blocker.write_text("not a folder")
    with pytest.raises(ChoralError, match="not a folder"):
        write_report(evaluate(*hand_built), blocker)


def test_references_as_kaldi_text(hand_built: tuple[Path, Path], tmp_path: Path) -> None:
    rescored, supervisions = hand_built
    text = tmp_path / "text"
    text.write_text("".join(f"{k} {v}\n" for k, v in REFERENCES.items()))
    assert evaluate(rescored, text).to_dict() == evaluate(rescored, supervisions).to_dict()


def test_stage_skips_an_up_to_date_report_and_redoes_it_when_forced(hand_built: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    rescored, refs = hand_built
    out = tmp_path / "eval"
    first = evaluate_manifest(rescored, refs, out, by=["accent"])
    assert not first.skipped and first.report == json.loads(first.paths.json.read_text())
    assert first.paths.json.with_name("report.json.meta.json").is_file()
    again = evaluate_manifest(rescored, refs, out, by=["accent"])
    assert again.skipped and again.report == first.report and again.n_missing_references == 0
    assert not evaluate_manifest(rescored, refs, out, by=["accent"], force=True).skipped
    assert not evaluate_manifest(rescored, refs, out, by=["speaker"]).skipped  # other parameters
    first.paths.chart.unlink()
    assert not evaluate_manifest(rescored, refs, out, by=["speaker"]).skipped  # an output went missing


def test_calibration_hand_computed(tmp_path: Path) -> None:
    """Five cuts over three bins: ECE = sum_b n_b/n |acc_b - conf_b| by hand."""
    cuts = [make_cut("a", ["x y"], "x y", confidence=0.95),     # bin 9, correct
            make_cut("b", ["x y"], "x z", confidence=0.85),     # bin 8, wrong (harmed)
            make_cut("c", ["x z"], "x y", confidence=0.8),      # bin 8, correct (helped)
            make_cut("d", ["x z"], "x z", confidence=0.05),     # bin 0, wrong
            make_cut("e", ["x z"], "x z", confidence=None)]     # no confidence: counted apart
    rescored = tmp_path / "rescored.jsonl.gz"
    write_cuts(cuts, rescored)
    refs = write_supervisions(tmp_path / "refs.jsonl.gz", dict.fromkeys("abcde", "x y"))
    split = evaluate(rescored, refs).to_dict()["unannotated"]
    bins = split["calibration"]["bins"]
    assert [b["n"] for b in bins] == [1, 0, 0, 0, 0, 0, 0, 0, 2, 1]
    assert bins[8]["confidence"] == pytest.approx(0.825) and bins[8]["accuracy"] == 0.5
    assert bins[0]["accuracy"] == 0.0 and bins[9]["accuracy"] == 1.0
    # (1/4)|0 - 0.05| + (2/4)|0.5 - 0.825| + (1/4)|1 - 0.95| = 0.0125 + 0.1625 + 0.0125
    assert split["ece"] == pytest.approx(0.1875)
    assert split["calibration"]["n"] == 4 and split["n_without_confidence"] == 1
    assert split["calibration"]["accuracy"] == 0.5
    assert split["calibration"]["mean_confidence"] == pytest.approx((0.95 + 0.85 + 0.8 + 0.05) / 4)
    assert (split["n_helped"], split["n_harmed"]) == (1, 1)
    assert split["help_rate"] == pytest.approx(1 / 5) and split["harm_rate"] == pytest.approx(1 / 5)
    # the empty annotated split: no calibration, ECE undefined
    assert evaluate(rescored, refs).to_dict()["annotated"]["ece"] is None


def test_confidence_bins_edges() -> None:
    from choral.pipeline.evaluate import Calibration, confidence_bin

    assert [confidence_bin(c) for c in (0.0, 0.0999, 0.1, 0.5, 0.99, 1.0)] == [0, 0, 1, 5, 9, 9]
    calibration = Calibration()
    assert calibration.ece is None and calibration.accuracy is None
    calibration.add(1.0, True)
    calibration.add(0.0, False)
    assert calibration.ece == 0.0  # perfectly calibrated extremes


@pytest.mark.parametrize("bad", [1.5, -0.1, "high", float("nan"), True])
def test_bad_confidence_is_an_input_error(tmp_path: Path, bad: object) -> None:
    rescored = tmp_path / "rescored.jsonl.gz"
    write_cuts([make_cut("a", ["x y"], "x y", confidence=bad)], rescored)
    refs = write_supervisions(tmp_path / "refs.jsonl.gz", {"a": "x y"})
    with pytest.raises(InputError, match="confidence must be a number in \\[0, 1\\]"):
        evaluate_manifest(rescored, refs, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_report_rows_of_an_older_report_json_show_no_rates() -> None:
    """A report.json written before help/harm/calibration existed (an up-to-date skip) still renders."""
    from choral.cli.report import outcome_table, reliability_table
    from choral.pipeline.evaluate import optional_percent, report_rows

    legacy = {system: {"wer": 0.1, "by": {"accent": {"us": 0.1}}} for system in SYSTEMS}
    legacy.update({"relative_wer_reduction": 0.0, "n_cuts": 2, "n_words": 10, "n_missing_references": 0,
                   "sources": {}, "breakdown": {"accent": {"us": {"n_cuts": 2, "n_words": 10,
                                                                 "relative_wer_reduction": 0.0}}}})
    rows = report_rows(legacy)
    assert [(r.help_rate, r.harm_rate, r.ece) for r in rows] == [(None, None, None)] * 2
    assert optional_percent(rows[0].help_rate) == "-"
    assert outcome_table({"unannotated": legacy}, "unannotated", "eval").row_count == 2
    assert reliability_table({"unannotated": legacy}, "unannotated", "eval") is None
