"""``choral export`` on a tiny rescored manifest built from real audio files."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.cut import Cut

from choral.pipeline.config import from_mapping
from choral.pipeline.errors import ChoralError, ConfigError, InputError
from choral.pipeline.export import (
    ExportConfig,
    ExportPaths,
    Label,
    export_format_names,
    export_manifest,
    get_export_format,
    register_export_format,
    unregister_export_format,
)
from choral.pipeline.manifest import atomic_output, write_cuts

SR = 16000


def write_audio(path: Path, seconds: float, seed: int) -> Recording:
    """A sine tone plus noise, written as 16 kHz WAV or FLAC, as a lhotse Recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    samples = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, samples.astype(np.float32), SR)
    return Recording.from_file(path)


def choral(text: str, confidence: float, source: str, teacher_text: str | None = None) -> list[dict]:
    return [{"text": text, "confidence": confidence, "teacher_text": teacher_text or text, "source": source}]


def make_cut(cut_id: str, recording: Recording, *, start: float = 0.0, duration: float | None = None,
             speaker: str | None = None, reference: str | None = None, label: list[dict] | None = None) -> MonoCut:
    duration = recording.duration - start if duration is None else duration
    supervision = SupervisionSegment(id=cut_id, recording_id=recording.id, start=0.0, duration=duration,
                                     text=reference, speaker=speaker, language="en")
    custom = {"nbest": [{"text": "x", "score": -1.0}], "group": "g0000001", "group_size": 2}
    if label is not None:
        custom["choral"] = label
    return MonoCut(id=cut_id, start=start, duration=duration, channel=0, recording=recording,
                   supervisions=[supervision], custom=custom)


@dataclass
class Fixture:
    rescored: Path
    out: Path
    durations: dict[str, float]


def build(tmp_path: Path, *, segment_speaker: str = "bob", extra: list[MonoCut] | None = None) -> Fixture:
    """Four cuts: annotated, propagated (FLAC), a segment of a longer recording, and a speakerless one."""
    audio = tmp_path / "audio"
    audio.mkdir()
    short = write_audio(audio / "alice-001.wav", 1.5, 1)
    flac = write_audio(audio / "alice-002.flac", 2.0, 2)
    long = write_audio(audio / "long.wav", 6.0, 3)
    other = write_audio(audio / "zed.wav", 1.0, 4)
    cuts = [
        make_cut("alice-001", short, speaker="alice", reference="Hello world",
                 label=choral("hello world", 0.3, "reference", "hello word")),
        make_cut("alice-002", flac, speaker="alice", label=choral("good morning", 0.9, "propagated", "good mourning")),
        make_cut("seg-1", long, start=1.0, duration=2.0, speaker=segment_speaker,
                 label=choral("see you soon", 0.5, "teacher")),
        make_cut("zed", other, label=choral("thank you", 0.95, "teacher")),
    ] + (extra or [])
    rescored = tmp_path / "rescored.jsonl.gz"
    write_cuts(cuts, rescored)
    return Fixture(rescored, tmp_path / "out", {c.id: c.duration for c in cuts})


@pytest.fixture()
def fx(tmp_path: Path) -> Fixture:
    return build(tmp_path)


# --- lhotse -----------------------------------------------------------------------------------------------------


def test_lhotse_export_loads_back_with_labels_and_provenance(fx: Fixture) -> None:
    summary = export_manifest(fx.rescored, fx.out)
    assert summary.output == fx.out / "choral_cuts_train.jsonl.gz" and summary.n_kept == 4
    cuts = {c.id: c for c in CutSet.from_file(summary.output)}
    texts = {cut_id: cut.supervisions[0].text for cut_id, cut in cuts.items()}
    assert texts == {"alice-001": "Hello world", "alice-002": "good morning", "seg-1": "see you soon",
                     "zed": "thank you"}
    for cut in cuts.values():
        assert len(cut.supervisions) == 1
        sup = cut.supervisions[0]
        assert sup.start == 0 and math.isclose(sup.duration, cut.duration) and sup.language == "en"
        assert set(sup.custom) == {"teacher_text", "confidence", "source"}
        assert cut.custom is None  # pipeline fields (nbest, group, choral) are not exported
    assert cuts["alice-001"].supervisions[0].custom == {"teacher_text": "hello word", "confidence": 0.3,
                                                       "source": "reference"}
    assert cuts["alice-002"].supervisions[0].custom["source"] == "propagated"
    assert cuts["alice-002"].supervisions[0].speaker == "alice" and cuts["zed"].supervisions[0].speaker is None
    assert cuts["seg-1"].start == 1.0 and cuts["seg-1"].duration == 2.0
    assert cuts["seg-1"].load_audio().shape == (1, 2 * 16000)
    assert sorted(p.name for p in fx.out.iterdir()) == ["choral_cuts_train.jsonl.gz",
                                                         "choral_cuts_train.jsonl.gz.meta.json"]


def test_with_fbank_stores_80_dim_features(fx: Fixture) -> None:
    config = ExportConfig(prefix="demo", split="dev", with_fbank=True)
    summary = export_manifest(fx.rescored, fx.out, config)
    archive = fx.out / "demo_feats_dev.lca"
    assert summary.features == archive and archive.is_file()
    for cut in CutSet.from_file(fx.out / "demo_cuts_dev.jsonl.gz"):
        assert cut.has_features and cut.num_frames > 0 and cut.num_features == 80
        assert cut.features.storage_path == str(archive)
        assert cut.load_features().shape == (cut.num_frames, 80)
        assert abs(cut.num_frames - round(cut.duration * 100)) <= 2  # 10 ms frame shift
    assert not [p for p in fx.out.iterdir() if ".tmp." in p.name]


# --- NeMo -------------------------------------------------------------------------------------------------------


def test_nemo_lines_have_the_right_keys_and_offset_only_for_segments(fx: Fixture) -> None:
    summary = export_manifest(fx.rescored, fx.out, ExportConfig(format="nemo"))
    assert summary.output == fx.out / "choral_train.json"
    lines = [json.loads(line) for line in summary.output.read_text().splitlines()]
    by_file = {Path(entry["audio_filepath"]).name: entry for entry in lines}
    assert set(by_file) == {"alice-001.wav", "alice-002.flac", "long.wav", "zed.wav"}
    for name, entry in by_file.items():
        assert Path(entry["audio_filepath"]).is_absolute() and Path(entry["audio_filepath"]).is_file()
        assert set(entry) == ({"audio_filepath", "duration", "text", "offset"} if name == "long.wav"
                              else {"audio_filepath", "duration", "text"})
    assert by_file["long.wav"]["offset"] == 1.0 and by_file["long.wav"]["duration"] == 2.0
    assert by_file["alice-001.wav"]["text"] == "Hello world"


def test_nemo_rejects_a_recording_that_is_not_one_file(tmp_path: Path) -> None:
    url = Recording(id="remote", sources=[AudioSource(type="url", channels=[0], source="https://x/y.wav")],
                    sampling_rate=SR, num_samples=SR, duration=1.0)
    fx = build(tmp_path, extra=[make_cut("remote-1", url, label=choral("hi", 0.9, "teacher"))])
    with pytest.raises(InputError, match=r"\(cut remote-1\): recording remote is not a single audio file"):
        export_manifest(fx.rescored, fx.out, ExportConfig(format="nemo"))
    assert not fx.out.exists()


# --- Kaldi ------------------------------------------------------------------------------------------------------


def _read(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        rows.append((key, value))
    return rows


def _sorted_unique(name: str, keys: list[str]) -> list[str]:
    encoded = [k.encode("utf-8") for k in keys]
    return [] if encoded == sorted(set(encoded)) else [f"{name} is not sorted (LC_ALL=C) or has duplicate keys"]


def validate_data_dir(data: Path) -> list[str]:
    """The rules of Kaldi's utils/validate_data_dir.sh (--no-feats): the problems found, [] when valid."""
    required = ["wav.scp", "text", "utt2spk", "spk2utt"]
    missing = [name for name in required if not (data / name).is_file()]
    if missing:
        return [f"missing {', '.join(missing)}"]
    tables = {name: _read(data / name) for name in required + (["segments"] if (data / "segments").exists() else [])}
    problems: list[str] = []
    for name, rows in tables.items():
        problems += _sorted_unique(name, [key for key, _ in rows])
        problems += [f"{name}: bad line for {key!r}" for key, value in rows if not key or not value.strip()]
    utts = [key for key, _ in tables["utt2spk"]]
    problems += [f"utt2spk: {key} needs exactly one speaker" for key, v in tables["utt2spk"] if len(v.split()) != 1]
    if [key for key, _ in tables["text"]] != utts:
        problems.append("utterance lists of text and utt2spk differ")
    problems += [f"text: empty transcript for {key}" for key, value in tables["text"] if not value.split()]
    inverse = [(utt, spk) for spk, value in tables["spk2utt"] for utt in value.split()]
    if inverse != [(utt, spk) for utt, spk in tables["utt2spk"]]:
        problems.append("spk2utt is not the inverse of utt2spk (utterance and speaker orders disagree?)")
    wav_keys = [key for key, _ in tables["wav.scp"]]
    if "segments" in tables:
        segments = tables["segments"]
        if [key for key, _ in segments] != utts:
            problems.append("utterance lists of segments and utt2spk differ")
        for key, value in segments:
            fields = value.split()
            if len(fields) != 3 or float(fields[2]) <= float(fields[1]):
                problems.append(f"segments: bad line for {key}")
        if sorted({value.split()[0] for _, value in segments}) != sorted(wav_keys):
            problems.append("recording ids of segments and wav.scp differ")
    elif wav_keys != utts:
        problems.append("wav.scp keys differ from the utterance list (and there is no segments file)")
    return problems


def test_kaldi_dir_passes_the_validator_with_segments(fx: Fixture) -> None:
    summary = export_manifest(fx.rescored, fx.out, ExportConfig(format="kaldi"))
    data = fx.out / "choral_train"
    assert summary.output == data and summary.renamed_utterances == 0
    assert validate_data_dir(data) == []
    assert sorted(p.name for p in data.iterdir()) == ["segments", "spk2utt", "text", "utt2spk", "wav.scp"]
    wav = dict(_read(data / "wav.scp"))
    assert set(wav) == {"alice-001", "alice-002", "long", "zed"}  # keyed by recording id
    assert wav["long"].endswith("long.wav") and Path(wav["long"]).is_absolute()
    assert wav["alice-002"].startswith("sox ") and wav["alice-002"].endswith(" |")  # FLAC through a pipe
    assert dict(_read(data / "segments"))["seg-1"] == "long 1.000 3.000"
    assert dict(_read(data / "utt2spk")) == {"alice-001": "alice", "alice-002": "alice", "seg-1": "bob",
                                            "zed": "zed"}
    assert dict(_read(data / "text"))["alice-001"] == "Hello world"
    assert sorted(p.name for p in fx.out.iterdir()) == ["choral_train", "choral_train.meta.json"]


def test_kaldi_without_segments_keys_wav_scp_by_utterance(fx: Fixture) -> None:
    export_manifest(fx.rescored, fx.out, ExportConfig(format="kaldi", min_confidence=0.6))  # drops seg-1
    data = fx.out / "choral_train"
    assert validate_data_dir(data) == [] and not (data / "segments").exists()
    assert [key for key, _ in _read(data / "wav.scp")] == ["alice-001", "alice-002", "zed"]


def test_kaldi_prefixes_utterances_when_speaker_order_disagrees(tmp_path: Path) -> None:
    fx = build(tmp_path, segment_speaker="aaron")  # "seg-1" sorts after "alice-*" but "aaron" before "alice"
    summary = export_manifest(fx.rescored, fx.out, ExportConfig(format="kaldi"))
    data = fx.out / "choral_train"
    assert summary.renamed_utterances == 1 and validate_data_dir(data) == []
    assert [key for key, _ in _read(data / "utt2spk")] == ["aaron-seg-1", "alice-001", "alice-002", "zed"]


@pytest.mark.parametrize("breakage", ["unsorted text", "missing utt in text", "spk2utt mismatch", "empty text",
                                      "bad segment", "unknown recording", "missing spk2utt"])
def test_the_validator_catches_broken_dirs(fx: Fixture, breakage: str) -> None:
    export_manifest(fx.rescored, fx.out, ExportConfig(format="kaldi"))
    data = fx.out / "broken"
    shutil.copytree(fx.out / "choral_train", data)

    def edit(name: str, change) -> None:
        lines = (data / name).read_text().splitlines()
        (data / name).write_text("".join(line + "\n" for line in change(lines)))

    if breakage == "unsorted text":
        edit("text", lambda lines: lines[::-1])
    elif breakage == "missing utt in text":
        edit("text", lambda lines: lines[1:])
    elif breakage == "spk2utt mismatch":
        edit("spk2utt", lambda lines: [line.replace("alice-002", "zed") for line in lines])
    elif breakage == "empty text":
        edit("text", lambda lines: [lines[0].split()[0]] + lines[1:])
    elif breakage == "bad segment":
        edit("segments", lambda lines: [line.replace("1.000 3.000", "3.000 1.000") for line in lines])
    elif breakage == "unknown recording":
        edit("segments", lambda lines: [line.replace(" long ", " lost ") for line in lines])
    else:
        (data / "spk2utt").unlink()
    assert validate_data_dir(data) != []


# --- filters, summary, errors, reruns -------------------------------------------------------------------------


def test_min_confidence_keeps_references_and_counts_by_source(fx: Fixture) -> None:
    summary = export_manifest(fx.rescored, fx.out, ExportConfig(min_confidence=0.95))
    kept = {c.id for c in CutSet.from_file(summary.output)}
    assert kept == {"alice-001", "zed"}  # the reference survives its 0.3 confidence; 0.95 is not below 0.95
    by = summary.by_source
    assert (by["reference"].kept, by["reference"].dropped) == (1, 0)
    assert (by["propagated"].kept, by["propagated"].dropped) == (0, 1)
    assert (by["teacher"].kept, by["teacher"].dropped) == (1, 1)
    assert summary.n_kept == 2 and summary.n_dropped == 2
    d = fx.durations
    assert math.isclose(summary.hours_kept * 3600, d["alice-001"] + d["zed"])
    assert math.isclose(summary.hours_dropped * 3600, d["alice-002"] + d["seg-1"])
    assert summary.dropped_by_reason == {"confidence < --min-confidence": 2}


def test_max_wer_estimate_is_one_minus_confidence(fx: Fixture) -> None:
    summary = export_manifest(fx.rescored, fx.out, ExportConfig(max_wer_estimate=0.1))
    assert {c.id for c in CutSet.from_file(summary.output)} == {"alice-001", "alice-002", "zed"}
    assert summary.dropped_by_reason == {"WER estimate > --max-wer-estimate": 1}


def test_empty_pseudo_labels_are_dropped(tmp_path: Path) -> None:
    fx = build(tmp_path)
    silent = Recording.from_file(tmp_path / "audio" / "zed.wav", recording_id="quiet")
    rescored = tmp_path / "with_empty.jsonl.gz"
    write_cuts(list(CutSet.from_file(fx.rescored)) + [make_cut("quiet", silent, label=choral("  ", 0.99, "teacher"))],
               rescored)
    summary = export_manifest(rescored, fx.out)
    assert summary.dropped_by_reason == {"empty pseudo-label": 1} and summary.n_kept == 4


def test_nothing_left_after_filters_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    fx = build(tmp_path)
    rescored = tmp_path / "unannotated.jsonl.gz"
    write_cuts([c for c in CutSet.from_file(fx.rescored) if c.id != "alice-001"], rescored)
    with pytest.raises(ChoralError, match="every cut was dropped"):
        export_manifest(rescored, fx.out, ExportConfig(format="kaldi", min_confidence=0.99))
    assert not fx.out.exists()


@pytest.mark.parametrize("format", ["lhotse", "nemo", "kaldi"])
def test_missing_pseudo_label_fails_naming_file_and_cut_and_writes_nothing(tmp_path: Path, format: str) -> None:
    fx = build(tmp_path)
    bare = Recording.from_file(tmp_path / "audio" / "zed.wav", recording_id="bare")
    rescored = tmp_path / "partial.jsonl.gz"
    write_cuts(list(CutSet.from_file(fx.rescored)) + [make_cut("bare-1", bare)], rescored)
    fx.out.mkdir()
    with pytest.raises(InputError, match=r"partial.jsonl.gz \(cut bare-1\): .*run `choral propagate` first"):
        config = ExportConfig(format=format, with_fbank=format == "lhotse")
        export_manifest(rescored, fx.out, config)
    assert list(fx.out.iterdir()) == []


def test_malformed_pseudo_label_is_an_input_error(tmp_path: Path) -> None:
    recording = write_audio(tmp_path / "a.wav", 1.0, 0)
    rescored = tmp_path / "rescored.jsonl.gz"
    write_cuts([make_cut("a", recording, label=choral("hi", 1.7, "teacher"))], rescored)
    with pytest.raises(InputError, match=r"\(cut a\): custom.choral confidence must be a number in \[0, 1\]"):
        export_manifest(rescored, tmp_path / "out")


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^with_fbank only applies to format lhotse") as fbank:
        ExportConfig(format="nemo", with_fbank=True)
    assert fbank.value.field == "with_fbank"
    with pytest.raises(ConfigError, match=r"^split 'a b' must be a non-empty file-name part") as split:
        ExportConfig(split="a b")
    assert split.value.field == "split"
    with pytest.raises(ChoralError, match="unknown export format"):
        ExportConfig(format="espnet")


@pytest.mark.parametrize("format", ["lhotse", "nemo", "kaldi"])
def test_unchanged_rerun_is_skipped_and_force_or_new_options_redo(fx: Fixture, format: str) -> None:
    config = ExportConfig(format=format)
    first = export_manifest(fx.rescored, fx.out, config)
    assert not first.skipped
    again = export_manifest(fx.rescored, fx.out, config)
    assert again.skipped and again.output == first.output
    assert not export_manifest(fx.rescored, fx.out, config, force=True).skipped
    stricter = ExportConfig(format=format, min_confidence=0.6)
    assert not export_manifest(fx.rescored, fx.out, stricter).skipped
    assert not [p for p in fx.out.iterdir() if p.name.startswith(".")]  # no temporaries or old dirs left


# --- the format registry ----------------------------------------------------------------------------------------


@pytest.fixture()
def toy() -> Iterator[str]:
    """A toy format registered for one test: one ``id<TAB>text`` line per kept cut."""

    @register_export_format("toy", output="{prefix}_{split}.tsv", description="cut id and text per line")
    def write_toy(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
        with atomic_output(paths.primary) as tmp:
            tmp.write_text("".join(f"{cut.id}\t{label.text}\n" for cut, label in items), encoding="utf-8")
        return 0

    try:
        yield "toy"
    finally:
        unregister_export_format("toy")


def test_the_built_in_formats_are_registered_in_order() -> None:
    assert export_format_names() == ("lhotse", "nemo", "kaldi")
    with pytest.raises(ChoralError, match=r"^unknown export format 'espnet'; choose one of lhotse, nemo, kaldi$"):
        ExportConfig(format="espnet")


def test_a_registered_toy_format_is_exported_filtered_and_skipped_on_rerun(fx: Fixture, toy: str) -> None:
    config = ExportConfig(format=toy, prefix="demo", split="dev", min_confidence=0.6)
    summary = export_manifest(fx.rescored, fx.out, config)
    assert summary.output == fx.out / "demo_dev.tsv" and summary.format == "toy" and summary.features is None
    assert summary.output.read_text().splitlines() == ["alice-001\tHello world", "alice-002\tgood morning",
                                                       "zed\tthank you"]
    assert summary.n_kept == 3 and summary.dropped_by_reason == {"confidence < --min-confidence": 1}
    assert sorted(p.name for p in fx.out.iterdir()) == ["demo_dev.tsv", "demo_dev.tsv.meta.json"]
    assert export_manifest(fx.rescored, fx.out, config).skipped
    with pytest.raises(ConfigError, match=r"^with_fbank only applies to format lhotse"):
        ExportConfig(format=toy, with_fbank=True)


def test_a_registered_format_is_accepted_by_the_config_reader_and_listed_in_its_errors(toy: str) -> None:
    source = Path("run.yaml")
    assert from_mapping(ExportConfig, {"format": "toy"}, source, "export").format == "toy"
    with pytest.raises(InputError, match="key 'export.format' must be 'lhotse' or 'nemo' or 'kaldi' or 'toy', "
                                         "not 'parquet'"):
        from_mapping(ExportConfig, {"format": "parquet"}, source, "export")
    with pytest.raises(ChoralError, match="choose one of lhotse, nemo, kaldi, toy$"):
        ExportConfig(format="espnet")


def test_an_unregistered_format_is_gone() -> None:
    @register_export_format("gone", output="{prefix}.txt", description="registered, then removed")
    def write_gone(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
        return 0

    assert get_export_format("gone").writer is write_gone
    unregister_export_format("gone")
    assert "gone" not in export_format_names()
    with pytest.raises(ChoralError, match="unknown export format 'gone'"):
        ExportConfig(format="gone")
    with pytest.raises(ValueError, match="not registered"):
        unregister_export_format("gone")


def test_format_registration_is_checked() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_export_format("nemo", output="{prefix}.json", description="a second nemo")(lambda *a: 0)
    with pytest.raises(ValueError, match="lower-case"):
        register_export_format("Toy Format", output="{prefix}.txt", description="")
    with pytest.raises(ValueError, match=r"may only use \{prefix\} and \{split\}"):
        register_export_format("toy", output="{corpus}_{split}.txt", description="")
    assert get_export_format("nemo").output == "{prefix}_{split}.json"
    assert "toy" not in export_format_names()


def _export_files(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def test_changing_the_format_removes_the_previous_exports_files(fx: Fixture) -> None:
    """lhotse + fbank -> nemo -> kaldi -> lhotse: export/ holds only the current format's files and sidecar."""
    export_manifest(fx.rescored, fx.out, ExportConfig(format="lhotse", with_fbank=True))
    assert _export_files(fx.out) == {"choral_cuts_train.jsonl.gz", "choral_feats_train.lca",
                                     "choral_cuts_train.jsonl.gz.meta.json"}
    export_manifest(fx.rescored, fx.out, ExportConfig(format="nemo"))
    assert _export_files(fx.out) == {"choral_train.json", "choral_train.json.meta.json"}
    export_manifest(fx.rescored, fx.out, ExportConfig(format="kaldi"))
    assert _export_files(fx.out) == {"choral_train", "choral_train.meta.json"}
    export_manifest(fx.rescored, fx.out, ExportConfig(format="lhotse", with_fbank=True))
    # fbank off: the same sidecar name, and its feature archive goes
    export_manifest(fx.rescored, fx.out, ExportConfig(format="lhotse"))
    assert _export_files(fx.out) == {"choral_cuts_train.jsonl.gz", "choral_cuts_train.jsonl.gz.meta.json"}


def test_other_splits_and_files_not_written_by_export_stay(fx: Fixture) -> None:
    export_manifest(fx.rescored, fx.out, ExportConfig(format="nemo", split="dev"))
    (fx.out / "notes.txt").write_text("mine\n")
    (fx.out / "choral_train.json").write_text("a file of the user's, no export of ours wrote it\n")
    export_manifest(fx.rescored, fx.out, ExportConfig(format="lhotse", split="dev"))
    export_manifest(fx.rescored, fx.out, ExportConfig(format="lhotse", split="train"))
    assert _export_files(fx.out) == {"notes.txt", "choral_train.json", "choral_cuts_dev.jsonl.gz",
                                     "choral_cuts_dev.jsonl.gz.meta.json", "choral_cuts_train.jsonl.gz",
                                     "choral_cuts_train.jsonl.gz.meta.json"}


def test_a_failed_export_keeps_the_previous_one_and_a_rerun_finishes_an_interrupted_removal(
        fx: Fixture, tmp_path: Path) -> None:
    export_manifest(fx.rescored, fx.out, ExportConfig(format="nemo"))
    before = _export_files(fx.out)
    unannotated = tmp_path / "unannotated.jsonl.gz"
    write_cuts([c for c in CutSet.from_file(fx.rescored) if c.id != "alice-001"], unannotated)
    with pytest.raises(ChoralError, match="every cut was dropped"):  # nothing exported: the nemo export stays
        export_manifest(unannotated, fx.out, ExportConfig(format="lhotse", min_confidence=0.99))
    assert _export_files(fx.out) == before
    # a removal killed after the new export's sidecar was written: the skipped rerun finishes it
    export_manifest(fx.rescored, fx.out, ExportConfig(format="lhotse"))
    (fx.out / "choral_train.json").write_text("{}\n")
    (fx.out / "choral_train.json.meta.json").write_text(json.dumps(
        {"stage": "export", "params": {"prefix": "choral", "split": "train"},
         "outputs": [str(fx.out / "choral_train.json")]}))
    assert export_manifest(fx.rescored, fx.out, ExportConfig(format="lhotse")).skipped
    assert _export_files(fx.out) == {"choral_cuts_train.jsonl.gz", "choral_cuts_train.jsonl.gz.meta.json"}
