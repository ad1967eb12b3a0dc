"""The committed demo set of the synthetic accented corpus (benchmarks/accented/demo) is well formed."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

ACCENTED = Path(__file__).resolve().parents[2] / "benchmarks" / "accented"
ACCENTS = {"en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan"}


def _corpus_io():
    """benchmarks/ is not a package: load its manifest helpers by path."""
    spec = importlib.util.spec_from_file_location("accented_corpus_io", ACCENTED / "corpus_io.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo():
    return _corpus_io().load_demo()


@pytest.fixture(scope="module")
def cuts(demo):
    return list(demo[0])


@pytest.fixture(scope="module")
def references(demo):
    return {s.id: s for s in demo[1]}


def test_demo_is_small_and_has_its_files():
    demo = ACCENTED / "demo"
    assert (demo / "cuts.jsonl.gz").is_file() and (demo / "references.jsonl.gz").is_file()
    assert sum(p.stat().st_size for p in demo.rglob("*") if p.is_file()) <= 10 * 2**20


def test_paths_are_stored_relative_to_the_repository():
    from lhotse import CutSet

    raw = CutSet.from_file(ACCENTED / "demo" / "cuts.jsonl.gz")
    for cut in raw:
        source = cut.recording.sources[0].source
        assert source.startswith("benchmarks/accented/demo/audio/") and source.endswith(".flac")


def test_cut_ids_unique(cuts):
    ids = [c.id for c in cuts]
    assert len(ids) == len(set(ids)) >= 100


def test_audio_exists_16k_mono_with_manifest_duration(cuts):
    for cut in cuts:
        path = Path(cut.recording.sources[0].source)
        assert path.is_file(), path
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert info.frames == cut.recording.num_samples
        assert abs(info.frames / 16000 - cut.duration) < 1e-3
        assert cut.recording.sampling_rate == 16000 and cut.num_channels == 1


def test_audio_loads_through_lhotse(cuts):
    for cut in cuts[::25]:
        audio = cut.load_audio()
        assert audio.shape == (1, cut.num_samples)
        assert 0.01 < float(abs(audio).max()) <= 1.0


def test_every_accent_present_equally_with_metadata(cuts):
    counts = Counter(c.custom["accent"] for c in cuts)
    assert set(counts) == ACCENTS and len(set(counts.values())) == 1
    for cut in cuts:
        (supervision,) = cut.supervisions
        assert supervision.speaker and supervision.custom["accent"] == cut.custom["accent"]
        assert supervision.custom["voice"] == cut.custom["voice"] == "joe"
        assert supervision.duration == pytest.approx(cut.duration)


def test_annotated_fraction_is_ten_percent_per_accent(cuts):
    per_accent = Counter(c.custom["accent"] for c in cuts)
    annotated = Counter(c.custom["accent"] for c in cuts if c.supervisions[0].text is not None)
    for accent, total in per_accent.items():
        assert annotated[accent] == round(0.1 * total), accent
    for cut in cuts:
        assert cut.custom["annotated"] == (cut.supervisions[0].text is not None)


def test_references_cover_every_cut_and_match_annotations(cuts, references):
    assert set(references) == {c.id for c in cuts}
    for cut in cuts:
        reference = references[cut.id]
        assert reference.text and reference.text == reference.text.lower()
        assert reference.custom["accent"] == cut.custom["accent"]
        if cut.supervisions[0].text is not None:
            assert cut.supervisions[0].text == reference.text


def test_no_reference_leaks_into_unannotated_cuts(cuts):
    for cut in cuts:
        if cut.custom["annotated"]:
            continue
        assert cut.supervisions[0].text is None
        blob = str(cut.to_dict())
        assert "prompt" not in (cut.custom or {}) and "domain" not in (cut.custom or {})
        assert "text': '" not in blob


def test_every_prompt_is_read_in_every_accent(references):
    accents_of: dict[str, set] = {}
    for reference in references.values():
        accents_of.setdefault(reference.custom["prompt"], set()).add(reference.custom["accent"])
    assert len(accents_of) >= 20 and all(a == ACCENTS for a in accents_of.values())


def test_cut_ids_do_not_reveal_the_prompt(cuts, references):
    domains = {r.custom["domain"] for r in references.values()} | {"passage"}
    for cut in cuts:
        assert not any(domain in cut.id for domain in domains), cut.id
        assert Path(cut.recording.sources[0].source).stem == cut.id
