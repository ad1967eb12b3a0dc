"""``prepare``: audio folders, Kaldi directories, NeMo and lhotse manifests -> one lhotse cut manifest."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import MonoCut, Recording, SupervisionSegment

from choral.pipeline.errors import ChoralError, InputError
from choral.pipeline.fields import is_annotated, reference_text
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.meta import meta_path
from choral.pipeline.prepare import InputConfig, prepare_input
from choral.pipeline.references import read_references


def tone(path: Path, seconds: float, freq: float = 300.0, rate: int = 16_000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
             rate)
    return path


def failed_of(output: Path) -> dict[str, str]:
    lines = output.with_name("failed.jsonl").read_text().splitlines()
    return {entry["id"]: entry["reason"] for entry in map(json.loads, lines)}


@pytest.fixture()
def audio_dir(tmp_path: Path) -> Path:
    """a.wav (16 kHz), spk1/b.flac (8 kHz), spk1/deep/c.wav, a corrupt bad.wav and a non-audio file."""
    folder = tmp_path / "audio"
    tone(folder / "a.wav", 1.0, 300.0)
    tone(folder / "spk1" / "b.flac", 1.5, 440.0, rate=8_000)
    tone(folder / "spk1" / "deep" / "c.wav", 2.0, 500.0, seed=1)
    (folder / "bad.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_audio_dir_gives_ids_from_relative_paths_and_lists_unreadable_files(audio_dir: Path,
                                                                            tmp_path: Path) -> None:
    output = tmp_path / "run" / "prepare" / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(audio_dir=audio_dir), output)
    assert not summary.skipped
    assert (summary.n_cuts, summary.n_failed, summary.n_annotated) == (3, 1, 0)
    assert summary.hours == pytest.approx(4.5 / 3600)
    cuts = {cut.id: cut for cut in read_cuts(output)}
    assert set(cuts) == {"a", "spk1-b", "spk1-deep-c"}
    assert cuts["spk1-b"].sampling_rate == 8_000 and cuts["spk1-b"].duration == pytest.approx(1.5)
    assert cuts["spk1-deep-c"].sampling_rate == 16_000 and cuts["spk1-deep-c"].duration == pytest.approx(2.0)
    for cut in cuts.values():
        source = Path(cut.recording.sources[0].source)
        assert source.is_absolute() and source.is_file()
        assert not is_annotated(cut)
    assert cuts["spk1-b"].load_audio().shape == (1, 12_000)
    failed = failed_of(output)
    assert list(failed) == ["bad"] and "bad.wav: cannot read audio header" in failed["bad"]
    assert meta_path(output).is_file()


def test_second_call_is_skipped_until_the_folder_changes(audio_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "cuts.jsonl.gz"
    config = InputConfig(audio_dir=audio_dir)
    prepare_input(config, output)
    stamp = output.stat().st_mtime_ns
    again = prepare_input(config, output)
    assert again.skipped and again.n_cuts == 0 and output.stat().st_mtime_ns == stamp

    tone(audio_dir / "spk2" / "d.wav", 1.0, 250.0)
    rerun = prepare_input(config, output)
    assert not rerun.skipped and rerun.n_cuts == 4
    assert "spk2-d" in {cut.id for cut in read_cuts(output)}
    assert prepare_input(config, output).skipped

    (audio_dir / "a.wav").unlink()
    assert prepare_input(config, output).n_cuts == 3
    assert not prepare_input(config, output, force=True).skipped


def test_two_files_with_one_cut_id_are_an_error(audio_dir: Path, tmp_path: Path) -> None:
    tone(audio_dir / "a.flac", 1.0)
    output = tmp_path / "cuts.jsonl.gz"
    with pytest.raises(ChoralError, match="same cut id 'a'"):
        prepare_input(InputConfig(audio_dir=audio_dir), output)
    assert not output.exists()


def test_empty_or_unusable_audio_dir_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("x")
    output = tmp_path / "out" / "cuts.jsonl.gz"
    with pytest.raises(ChoralError, match="no audio files"):
        prepare_input(InputConfig(audio_dir=empty), output)
    with pytest.raises(ChoralError, match="audio folder not found"):
        prepare_input(InputConfig(audio_dir=tmp_path / "absent"), output)
    (empty / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(InputError, match="no usable cut: .*cannot read audio header"):
        prepare_input(InputConfig(audio_dir=empty), output)
    assert not output.exists() and not output.with_name("failed.jsonl").exists()


def test_kaldi_text_annotations_mark_cuts_annotated(audio_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("a hello world\nspk1-deep-c  good   morning \n\n")
    output = tmp_path / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(audio_dir=audio_dir, annotations=text), output)
    assert summary.n_annotated == 2
    cuts = {cut.id: cut for cut in read_cuts(output)}
    assert reference_text(cuts["a"]) == "hello world"
    assert reference_text(cuts["spk1-deep-c"]) == "good   morning"
    supervision = cuts["a"].supervisions[0]
    assert (supervision.start, supervision.duration, supervision.recording_id) == (0.0, 1.0, "a")
    assert not is_annotated(cuts["spk1-b"]) and cuts["spk1-b"].supervisions == []

    # a new transcript re-prepares
    with text.open("a") as handle:
        handle.write("spk1-b third one\n")
    again = prepare_input(InputConfig(audio_dir=audio_dir, annotations=text), output)
    assert not again.skipped and again.n_annotated == 3


def test_annotation_of_an_unknown_cut_is_an_error_and_writes_nothing(audio_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("a hello\nnobody here\n")
    output = tmp_path / "out" / "cuts.jsonl.gz"
    with pytest.raises(InputError) as caught:
        prepare_input(InputConfig(audio_dir=audio_dir, annotations=text), output)
    assert caught.value.path == str(text) and "'nobody'" in str(caught.value)
    assert not output.exists() and not output.with_name("failed.jsonl").exists()
    assert not meta_path(output).exists()


def test_annotation_of_an_unreadable_file_is_tolerated(audio_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("a hello\nbad a corrupt recording\n")
    output = tmp_path / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(audio_dir=audio_dir, annotations=text), output)
    assert (summary.n_cuts, summary.n_annotated, summary.n_failed) == (3, 1, 1) and "bad" in failed_of(output)


def reference_texts(path: Path) -> dict[str, str]:
    return {cut_id: reference.text for cut_id, reference in read_references(path).items()}


def test_annotations_from_supervision_manifest_and_bad_text_lines(tmp_path: Path) -> None:
    sups = tmp_path / "sups.jsonl"
    sups.write_text("".join(json.dumps(SupervisionSegment(id=i, recording_id=i, start=0, duration=1,
                                                           text=t).to_dict()) + "\n"
                            for i, t in (("a", " hi there "), ("b", ""), ("c", "yes"))))
    assert reference_texts(sups) == {"a": "hi there", "c": "yes"}
    text = tmp_path / "text"
    text.write_text("a fine\nlonely\n")
    with pytest.raises(InputError) as caught:
        reference_texts(text)
    assert caught.value.line == 2 and "'lonely' has no transcript" in str(caught.value)
    with pytest.raises(InputError, match="file not found"):
        reference_texts(tmp_path / "absent")


def test_annotations_from_a_cut_manifest(audio_dir: Path, tmp_path: Path) -> None:
    """A lhotse cut manifest given as annotations: its cuts' supervision texts annotate (not silently nothing)."""
    annotated = tmp_path / "annotated.jsonl.gz"
    write_cuts([MonoCut(id=cut_id, start=0.0, duration=1.0, channel=0,
                        supervisions=[SupervisionSegment(id=f"{cut_id}-s", recording_id=cut_id, start=0.0,
                                                         duration=1.0, text=text)])
                for cut_id, text in (("a", "hello world"), ("spk1-b", " "), ("spk1-deep-c", "good morning"))],
               annotated)
    output = tmp_path / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(audio_dir=audio_dir, annotations=annotated), output)
    assert summary.n_annotated == 2
    cuts = {cut.id: cut for cut in read_cuts(output)}
    assert reference_text(cuts["a"]) == "hello world" and reference_text(cuts["spk1-deep-c"]) == "good morning"
    assert not is_annotated(cuts["spk1-b"])
    nothing = tmp_path / "nothing.jsonl.gz"
    write_cuts([MonoCut(id="a", start=0.0, duration=1.0, channel=0)], nothing)
    with pytest.raises(InputError, match="nothing.jsonl.gz: holds no reference text"):
        prepare_input(InputConfig(audio_dir=audio_dir, annotations=nothing), tmp_path / "other.jsonl.gz")


def test_nemo_manifest_with_relative_paths_offsets_and_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    tone(data / "wavs" / "long.wav", 3.0, 300.0)
    tone(data / "wavs" / "short.wav", 1.0, 400.0, rate=8_000)
    entries = [
        {"audio_filepath": "wavs/long.wav", "duration": 1.0, "offset": 0.5, "text": "first part"},
        {"audio_filepath": "wavs/long.wav", "duration": 2.0, "offset": 1.5, "text": "  "},
        {"audio_filepath": "wavs/short.wav", "duration": 1.0},
        {"audio_filepath": str(data / "wavs" / "long.wav"), "duration": 1.0, "offset": 5.0},
        {"audio_filepath": "wavs/missing.wav", "duration": 1.0, "text": "never"},
    ]
    manifest = data / "train_manifest.json"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries) + "\n")
    monkeypatch.chdir(tmp_path)  # paths are relative to the manifest's folder, not the working one
    output = tmp_path / "out" / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(nemo_manifest=Path("data/train_manifest.json")), output)
    assert (summary.n_cuts, summary.n_annotated, summary.n_failed) == (3, 1, 2)
    cuts = {cut.id: cut for cut in read_cuts(output)}
    assert set(cuts) == {"wavs-long-0000050", "wavs-long-0000150", "wavs-short"}
    first = cuts["wavs-long-0000050"]
    assert (first.start, first.duration) == (0.5, 1.0) and reference_text(first) == "first part"
    second = cuts["wavs-long-0000150"]
    assert second.duration == pytest.approx(1.5) and not is_annotated(second)  # clipped to the audio
    assert first.load_audio().shape == (1, 16_000) and second.load_audio().shape == (1, 24_000)
    assert cuts["wavs-short"].sampling_rate == 8_000 and not cuts["wavs-short"].supervisions
    assert Path(first.recording.sources[0].source) == (data / "wavs" / "long.wav").resolve()
    failed = failed_of(output)
    assert "outside" in failed[f"{(data / 'wavs' / 'long').as_posix().strip('/').replace('/', '-')}-0000500"]
    assert "cannot read audio header" in failed["wavs-missing"]


@pytest.mark.parametrize("line, problem", [
    ({"duration": 1.0}, "entry has no audio_filepath"),
    ({"audio_filepath": "a.wav", "offset": "soon"}, "offset must be a finite, non-negative number"),
    ({"audio_filepath": "a.wav", "duration": -1}, "duration must be a finite, non-negative number"),
    ([1, 2], "expected a JSON object"),
    ('{"audio_filepath": "a.wav", "duration": 1.0, "offset": 1e400}', "offset must be a finite, non-negative"),
    ('{"audio_filepath": "a.wav", "duration": 1.0, "offset": NaN}', "offset must be a finite, non-negative"),
    ('{"audio_filepath": "a.wav", "duration": NaN}', "duration must be a finite, non-negative"),
    ('{"audio_filepath": "a.wav", "duration": 1e400}', "duration must be a finite, non-negative"),
    ('{"audio_filepath": "a.wav", "duration": -Infinity}', "duration must be a finite, non-negative"),
    ('{"audio_filepath": "a.wav", "duration": 1.0, "offset": -0.5}', "offset must be a finite, non-negative"),
])
def test_bad_nemo_entry_names_the_line(tmp_path: Path, line: object, problem: str) -> None:
    tone(tmp_path / "a.wav", 1.0)
    manifest = tmp_path / "manifest.json"
    text = line if isinstance(line, str) else json.dumps(line)  # raw text: JSON numbers Python reads as inf/NaN
    manifest.write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1.0}) + "\n" + text + "\n")
    with pytest.raises(InputError) as caught:
        prepare_input(InputConfig(nemo_manifest=manifest), tmp_path / "cuts.jsonl.gz")
    assert caught.value.line == 2 and problem in str(caught.value)
    assert str(caught.value).startswith(f"{manifest}:2: ") and "\n" not in str(caught.value)
    assert not (tmp_path / "cuts.jsonl.gz").exists()


def test_kaldi_dir_with_wav_scp_and_partial_text(tmp_path: Path) -> None:
    x = tone(tmp_path / "audio" / "x.wav", 1.0, 300.0)
    y = tone(tmp_path / "audio" / "y.flac", 1.5, 440.0, rate=8_000)
    kaldi = tmp_path / "data" / "train"
    kaldi.mkdir(parents=True)
    (kaldi / "wav.scp").write_text(f"utt-x {x}\nutt-y {y}\nutt-z {tmp_path / 'audio' / 'gone.wav'}\n")
    (kaldi / "text").write_text("utt-x hello world\n")  # no utt2spk, text for one utterance only
    output = tmp_path / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(kaldi_dir=kaldi), output)
    assert (summary.n_cuts, summary.n_annotated, summary.n_failed) == (2, 1, 1)
    cuts = {cut.id: cut for cut in read_cuts(output)}
    assert set(cuts) == {"utt-x", "utt-y"} and "utt-z" in failed_of(output)
    assert reference_text(cuts["utt-x"]) == "hello world" and not is_annotated(cuts["utt-y"])
    assert cuts["utt-y"].sampling_rate == 8_000  # from the file, not the 16 kHz default
    assert cuts["utt-y"].load_audio().shape == (1, 12_000)

    # Kaldi-style annotations (a second `text`) attach to the utterance ids
    annotations = tmp_path / "more_text"
    annotations.write_text("utt-y good bye\n")
    summary = prepare_input(InputConfig(kaldi_dir=kaldi, annotations=annotations), output)
    assert summary.n_annotated == 2
    assert reference_text({c.id: c for c in read_cuts(output)}["utt-y"]) == "good bye"


def test_kaldi_dir_with_segments_and_speakers(tmp_path: Path) -> None:
    long = tone(tmp_path / "long.wav", 4.0, 300.0)
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"rec1 {long}\n")
    (kaldi / "segments").write_text("rec1-a rec1 0.0 1.5\nrec1-b rec1 1.5 -1\nrec1-c rec1 9.0 10.0\n")
    (kaldi / "utt2spk").write_text("rec1-a spk1\nrec1-b spk2\nrec1-c spk1\n")
    (kaldi / "text").write_text("rec1-a\nrec1-b the second part\n")
    output = tmp_path / "cuts.jsonl.gz"
    summary = prepare_input(InputConfig(kaldi_dir=kaldi), output)
    assert (summary.n_cuts, summary.n_annotated, summary.n_failed) == (2, 1, 1)
    cuts = {cut.id: cut for cut in read_cuts(output)}
    a, b = cuts["rec1-a"], cuts["rec1-b"]
    assert (a.start, a.duration) == (0.0, 1.5) and (b.start, b.duration) == (1.5, 2.5)
    assert not is_annotated(a) and a.supervisions[0].speaker == "spk1"
    assert reference_text(b) == "the second part" and b.supervisions[0].speaker == "spk2"
    assert b.load_audio().shape == (1, 40_000)
    assert "outside" in failed_of(output)["rec1-c"]

    (kaldi / "segments").write_text("rec1-a rec9 0.0 1.5\n")
    with pytest.raises(InputError, match="'rec9', which wav.scp does not list"):
        prepare_input(InputConfig(kaldi_dir=kaldi), output)
    (kaldi / "segments").write_text("rec1-a rec1 zero\n")
    with pytest.raises(InputError, match="expected '<utterance> <recording> <start> <end>'"):
        prepare_input(InputConfig(kaldi_dir=kaldi), output)
    for start, end in (("nan", "1.5"), ("0.0", "nan"), ("inf", "-1"), ("-1", "1.5"), ("0", "1e400")):
        (kaldi / "segments").write_text(f"rec1-a rec1 {start} {end}\n")
        with pytest.raises(InputError, match="start and end of 'rec1-a' must be finite, start non-negative"):
            prepare_input(InputConfig(kaldi_dir=kaldi), output)
    with pytest.raises(InputError, match="wav.scp: file not found"):
        prepare_input(InputConfig(kaldi_dir=tmp_path), output)


def test_lhotse_cuts_with_relative_paths_get_absolute_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    tone(corpus / "audio" / "a.wav", 1.0)
    tone(corpus / "audio" / "b.wav", 1.2, 500.0)
    monkeypatch.chdir(corpus)
    cuts = [Recording.from_file(f"audio/{name}.wav", recording_id=name).to_cut() for name in ("a", "b")]
    assert not os.path.isabs(cuts[0].recording.sources[0].source)
    manifest = tmp_path / "cuts.jsonl.gz"
    write_cuts(cuts, manifest)
    monkeypatch.chdir(tmp_path)

    assert not InputConfig(cuts=manifest).needs_prepare
    text = tmp_path / "text"
    text.write_text("b bee\n")
    config = InputConfig(cuts=manifest, audio_root=corpus, annotations=text)
    assert config.needs_prepare
    output = tmp_path / "run" / "cuts.jsonl.gz"
    summary = prepare_input(config, output)
    assert (summary.n_cuts, summary.n_annotated) == (2, 1)
    prepared = {cut.id: cut for cut in read_cuts(output)}
    for name, cut in prepared.items():
        assert Path(cut.recording.sources[0].source) == (corpus / "audio" / f"{name}.wav").resolve()
    assert prepared["a"].load_audio().shape == (1, 16_000) and reference_text(prepared["b"]) == "bee"
    assert prepare_input(config, output).skipped

    # absolute paths are left alone
    write_cuts(list(prepared.values()), manifest)
    prepare_input(InputConfig(cuts=manifest, audio_root=tmp_path / "elsewhere"), output)
    assert Path(read_cuts(output)[0].recording.sources[0].source) == (corpus / "audio" / "a.wav").resolve()


def test_input_config_needs_exactly_one_source() -> None:
    with pytest.raises(ChoralError, match="exactly one of"):
        InputConfig()
    with pytest.raises(ChoralError, match=r"\(got audio_dir, kaldi_dir\)"):
        InputConfig(audio_dir=Path("a"), kaldi_dir=Path("b"))
    with pytest.raises(ChoralError, match="audio_root only applies to a cuts manifest"):
        InputConfig(audio_dir=Path("a"), audio_root=Path("b"))
    config = InputConfig(nemo_manifest=Path("m.json"))
    assert config.kind == "nemo_manifest" and config.source == Path("m.json") and config.needs_prepare


def _break(path: Path) -> None:
    path.write_bytes(b"RIFF not really a wave file")


@pytest.mark.parametrize("kind", ["nemo_manifest", "kaldi_dir", "cuts"])
def test_a_fixed_audio_file_is_read_again_on_the_next_run(tmp_path: Path, kind: str) -> None:
    """Before, only the manifest was fingerprinted: a cut whose audio was fixed stayed failed until --force."""
    good = tone(tmp_path / "audio" / "good.wav", 1.0, 300.0)
    fixed = tmp_path / "audio" / "fixed.wav"
    _break(fixed)
    if kind == "nemo_manifest":
        source = tmp_path / "manifest.json"
        source.write_text("".join(json.dumps({"audio_filepath": f"audio/{p.name}", "duration": 1.0}) + "\n"
                                  for p in (good, fixed)))
        config = InputConfig(nemo_manifest=source)
        fixed_id = "audio-fixed"
    elif kind == "kaldi_dir":
        source = tmp_path / "kaldi"
        source.mkdir()
        (source / "wav.scp").write_text(f"good {good}\nfixed {fixed}\n")
        config = InputConfig(kaldi_dir=source)
        fixed_id = "fixed"
    else:
        tone(tmp_path / "spare.wav", 1.0, 400.0)
        cuts = [Recording.from_file(p, recording_id=p.stem).to_cut() for p in (good, tmp_path / "spare.wav")]
        cuts[1].recording.sources[0].source = "audio/fixed.wav"  # relative to audio_root
        cuts[0].recording.sources[0].source = "audio/good.wav"
        cuts[1].id = "fixed"
        source = tmp_path / "cuts.jsonl.gz"
        write_cuts(cuts, source)
        config = InputConfig(cuts=source, audio_root=tmp_path)
        fixed_id = "fixed"
        _break(fixed)
    output = tmp_path / "out" / "cuts.jsonl.gz"
    first = prepare_input(config, output)
    if kind != "cuts":  # a lhotse manifest carries its own header data; decode finds the broken samples
        assert first.n_failed == 1 and fixed_id in failed_of(output)
    assert prepare_input(config, output).skipped
    tone(fixed, 1.0, 500.0)
    os.utime(fixed, ns=(fixed.stat().st_atime_ns, fixed.stat().st_mtime_ns + 10**9))
    again = prepare_input(config, output)
    assert not again.skipped and again.n_failed == 0 and again.n_cuts == 2
    assert prepare_input(config, output).skipped
    fixed.unlink()  # a file that goes away is a change too
    assert not prepare_input(config, output).skipped
