"""The batched teacher scorer: same scores as one cut at a time, float32 close to float64, pruning, disk memo."""

from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import MonoCut, Recording

from choral.pipeline.errors import ChoralError, ConfigError
from choral.pipeline.teacher import TransducerTeacher
from choral.pipeline.teacher.device import check_device_spec, resolve_device
from choral.pipeline.teacher.model import TransducerConfig
from choral.pipeline.teacher.score_memo import ScoreMemo, fingerprint
from choral.pipeline.teacher.scoring import ScoreOptions, TeacherScorer, prefetch
from choral.pipeline.teacher.search import score_texts

TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=1, embedding_dim=8,
                        predictor_hidden=16, joiner_dim=16, dropout=0.0)
TEXTS = ["a cat", "the dog sat", "", "zz", "a cat sat on the mat today", "b"]


def _tone(path: Path, seconds: float, freq: float, seed: int) -> MonoCut:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
             16_000)
    return Recording.from_file(path, recording_id=path.stem).to_cut()


@pytest.fixture(scope="module")
def cuts(tmp_path_factory: pytest.TempPathFactory) -> list[MonoCut]:
    folder = tmp_path_factory.mktemp("audio")
    specs = [(1.3, 220.0), (0.7, 440.0), (2.1, 330.0), (1.0, 500.0)]
    return [_tone(folder / f"u{i}.wav", s, f, i) for i, (s, f) in enumerate(specs)]


@pytest.fixture(scope="module")
def teacher() -> TransducerTeacher:
    return TransducerTeacher.random(TINY, seed=1, beam=4, nbest=4)


def _one_at_a_time(teacher: TransducerTeacher, cut: MonoCut, texts: list[str]) -> list[float]:
    """The old path: one cut, its texts padded together, float64 lattice (search.score_texts)."""
    encoded, lengths = teacher.encode_features(teacher.features([cut]))
    return score_texts(teacher.model, encoded[0, : int(lengths[0])], [teacher.tokens.encode(t) for t in texts])


def _requests(cuts: list[MonoCut]) -> list[tuple[str, list[str]]]:
    return [(cut.id, TEXTS[i % 3:] + TEXTS[: i % 3]) for i, cut in enumerate(cuts)]


def test_batched_float64_matches_one_cut_at_a_time(teacher, cuts) -> None:
    scorer = teacher.scorer(cuts, ScoreOptions(dtype="float64"))
    got = scorer.score_many(_requests(cuts))
    for cut, (_, texts), scores in zip(cuts, _requests(cuts), got):
        assert np.allclose(scores, _one_at_a_time(teacher, cut, texts), atol=1e-5, rtol=0)


def test_float32_is_close_to_float64_and_passes_split_alike(teacher, cuts) -> None:
    exact = teacher.scorer(cuts, ScoreOptions(dtype="float64")).score_many(_requests(cuts))
    single = teacher.scorer(cuts).score_many(_requests(cuts))
    tiny_passes = teacher.scorer(cuts, ScoreOptions(elements=64)).score_many(_requests(cuts))  # a cut per pass
    assert np.abs(np.array(single) - np.array(exact)).max() < 1e-3
    assert np.allclose(tiny_passes, single, atol=1e-4, rtol=0)


def test_pruned_lattice_bounds_the_full_one(teacher, cuts) -> None:
    full = np.array(teacher.scorer(cuts, ScoreOptions(dtype="float64")).score_many(_requests(cuts)))
    wide = np.array(teacher.scorer(cuts, ScoreOptions(dtype="float64", prune=40)).score_many(_requests(cuts)))
    narrow = np.array(teacher.scorer(cuts, ScoreOptions(dtype="float64", prune=4)).score_many(_requests(cuts)))
    assert np.allclose(wide, full, atol=1e-9)  # wider than every text: nothing pruned
    assert (narrow <= full + 1e-6).all() and np.isfinite(narrow).all() and (narrow > -1e9).all()
    with pytest.raises(ValueError):
        ScoreOptions(prune=2)


def test_prefetch_scores_once_and_calls_agree(teacher, cuts) -> None:
    scorer = teacher.scorer(cuts)
    prefetch(scorer, _requests(cuts))
    assert scorer.pairs_scored == sum(len(set(texts)) for _, texts in _requests(cuts))
    again = [scorer(cut_id, texts) for cut_id, texts in _requests(cuts)]
    assert scorer.pairs_scored == sum(len(set(texts)) for _, texts in _requests(cuts))  # all memoised
    assert np.allclose(again, teacher.scorer(cuts).score_many(_requests(cuts)), atol=1e-5)
    prefetch(None, _requests(cuts))  # no scorer: nothing to do
    with pytest.raises(KeyError):
        scorer("nope", ["a"])


def test_teacher_scorer_prefetches_through(teacher, cuts) -> None:
    built = []

    def build():
        built.append(1)
        return teacher.scorer(cuts)

    named = TeacherScorer("teacher:x", [], build)
    assert not built
    named.prefetch(_requests(cuts))
    assert built == [1] and named.scorer.pairs_scored > 0  # type: ignore[attr-defined]


def test_disk_memo_is_shared_and_dropped_when_the_fingerprint_changes(teacher, cuts, tmp_path) -> None:
    path = tmp_path / "grouped.jsonl.gz.scores.sqlite"
    first = teacher.scorer(cuts, store=ScoreMemo(path, "k1"))
    expected = first.score_many(_requests(cuts))
    second = teacher.scorer(cuts, store=ScoreMemo(path, "k1"))
    assert second.score_many(_requests(cuts)) == expected and second.pairs_scored == 0
    third = teacher.scorer(cuts, store=ScoreMemo(path, "k2"))
    assert np.allclose(third.score_many(_requests(cuts)), expected) and third.pairs_scored > 0
    assert len(ScoreMemo(path, "k2")) == third.pairs_scored
    assert len(ScoreMemo(path, "k3")) == 0


def test_disk_memo_unusable_is_ignored(tmp_path) -> None:
    memo = ScoreMemo(tmp_path / "missing-dir" / "x.sqlite", "k")
    memo.put_many({("a", "b"): 1.0})
    assert memo.get_many([("a", "b")]) == {} and len(memo) == 0


def test_fingerprint_follows_files(tmp_path) -> None:
    f = tmp_path / "grouped.jsonl.gz"
    f.write_text("a")
    before = fingerprint("teacher:x", [f])
    assert fingerprint("teacher:y", [f]) != before
    f.write_text("ab")
    assert fingerprint("teacher:x", [f]) != before


def test_device_specs() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:", "CPU", "cuda:x"):
        with pytest.raises(ConfigError):
            check_device_spec(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ChoralError, match="no CUDA device"):
            resolve_device("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_cuda_match_cpu(teacher, cuts) -> None:
    cpu = teacher.scorer(cuts).score_many(_requests(cuts))
    moved = TransducerTeacher.random(TINY, seed=1, beam=4, nbest=4).to(torch.device("cuda"))
    assert np.allclose(moved.scorer(cuts).score_many(_requests(cuts)), cpu, atol=1e-3)
