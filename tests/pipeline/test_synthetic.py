from collections import Counter

import numpy as np

from choral.pipeline.fields import is_annotated, load_array, nbest
from choral.pipeline.manifest import read_cuts
from choral.pipeline.synthetic import SyntheticCorpus


def test_structure_of_generated_corpus(small_corpus: SyntheticCorpus) -> None:
    cuts = read_cuts(small_corpus.decoded)
    assert len(cuts) == small_corpus.n_cuts == 240
    accents = Counter(c.custom["accent"] for c in cuts)
    assert set(accents) == {"us", "england", "scotland", "caribbean"}
    annotated = [c for c in cuts if is_annotated(c)]
    assert 0.1 < len(annotated) / len(cuts) < 0.4
    for cut in annotated:
        assert cut.supervisions[0].text == small_corpus.reference_of_cut[cut.id]
    first = cuts[0]
    assert load_array(first, "embedding", small_corpus.decoded).shape == (64,)
    assert load_array(first, "frames", small_corpus.decoded).ndim == 2
    scores = [h.score for h in nbest(first, small_corpus.decoded)]
    assert scores == sorted(scores, reverse=True)


def test_accented_cuts_rank_the_right_text_lower_than_majority_cuts(small_corpus: SyntheticCorpus) -> None:
    top1_correct: dict[str, list[bool]] = {}
    for cut in read_cuts(small_corpus.decoded):
        best = nbest(cut, small_corpus.decoded)[0].text
        top1_correct.setdefault(cut.custom["accent"], []).append(best == small_corpus.reference_of_cut[cut.id])
    majority = np.mean(top1_correct["us"])
    for accent in ("england", "scotland", "caribbean"):
        assert np.mean(top1_correct[accent]) < majority - 0.25


def test_unannotated_cuts_carry_no_reference(small_corpus: SyntheticCorpus) -> None:
    for cut in read_cuts(small_corpus.decoded):
        if not is_annotated(cut):
            assert all(s.text is None for s in cut.supervisions)
            assert "reference" not in cut.custom
