"""The accented corpus' prompts and split plan (no synthesis: fast, needs no TTS package)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

ACCENTED = Path(__file__).resolve().parents[2] / "benchmarks" / "accented"


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(ACCENTED))
    try:
        import corpus_prompts
        import make_corpus
        yield corpus_prompts, make_corpus
    finally:
        sys.path.remove(str(ACCENTED))


@pytest.fixture(scope="module")
def plan(modules):
    _, make_corpus = modules
    args = make_corpus.parse_args([])
    return make_corpus.plan_full(args.seed, args.pool_prompts, args.dev_prompts, args.train_prompts,
                                 args.train_readings, args.dev_readings)


def test_prompts_distinct_many_domains_deterministic(modules):
    corpus_prompts, _ = modules
    prompts = corpus_prompts.command_prompts(800, seed=1)
    assert len({p.text for p in prompts}) == 800
    assert len({p.domain for p in prompts}) >= 8
    assert prompts == corpus_prompts.command_prompts(800, seed=1)
    assert any(p.text.startswith("call ") and len(p.text.split()) >= 5 for p in prompts)
    assert len(corpus_prompts.passage_prompts()) >= 15


def test_reference_text_is_normalized(modules):
    corpus_prompts, _ = modules
    assert corpus_prompts.reference_text("By seven o'clock, the Market-square!") == "by seven o'clock the market square"
    assert corpus_prompts.number_words(67) == "sixty seven"


def test_splits_sizes_and_accents(plan):
    splits = Counter(item.split for item in plan)
    assert 2800 <= splits["pool"] <= 3200
    assert splits["teacher_train"] >= 4000 and splits["teacher_dev"] > 0
    assert {i.accent for i in plan if i.split != "pool"} == {"en-us"}
    assert {i.accent for i in plan if i.split == "pool"} >= {"en-us", "en-gb-x-rp", "en-gb-scotland", "en-029",
                                                             "en-gb-x-gbclan"}
    assert len({i.cut_id for i in plan}) == len(plan)


def test_teacher_prompts_disjoint_from_pool(plan):
    splits = ("pool", "teacher_train", "teacher_dev")
    texts = {split: {i.prompt.text for i in plan if i.split == split} for split in splits}
    assert len(texts["pool"] | texts["teacher_train"] | texts["teacher_dev"]) >= 600
    assert not texts["pool"] & (texts["teacher_train"] | texts["teacher_dev"])
    assert not texts["teacher_train"] & texts["teacher_dev"]


def test_pool_speaker_kept_across_accents(plan):
    accents_of = {}
    for item in plan:
        if item.split == "pool":
            accents_of.setdefault(item.speaker, set()).add(item.accent)
    assert any(len(a) >= 5 for a in accents_of.values())


def test_annotation_is_stratified(modules, plan):
    _, make_corpus = modules
    pool = [i for i in plan if i.split == "pool"]
    chosen = make_corpus.annotated_ids(pool, 0.1, seed=4)
    totals = Counter(i.accent for i in pool)
    annotated = Counter(i.accent for i in pool if i.cut_id in chosen)
    assert all(annotated[a] == round(0.1 * n) for a, n in totals.items())
    assert chosen == make_corpus.annotated_ids(pool, 0.1, seed=4)
