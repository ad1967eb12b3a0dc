"""The one WER implementation: per hypothesis against one reference, and pooled over cuts."""

import jiwer

from choral.pipeline.wer import pooled_word_errors, word_errors, word_errors_many


def test_word_errors_counts_substitutions_deletions_insertions() -> None:
    assert word_errors("a b c", "a x c d") == 2
    assert word_errors("a b", "") == 2 and word_errors("", "a b") == 2 and word_errors("", "") == 0
    assert word_errors_many("a b c", ["a x c d", "", "a b c", "c b a", "b c"]) == [2, 3, 0, 2, 1]
    assert word_errors_many("", ["a b", ""]) == [2, 0]


def test_pooled_word_errors_sum_over_cuts_and_count_insertions_of_empty_references() -> None:
    references = ["a b c", "", "d e", "f", "g h i j"]
    hypotheses = ["a x c d", "x y", "", "f", "g i j k l"]
    assert pooled_word_errors(references, hypotheses) == (2 + 2 + 2 + 0 + 3, 3 + 0 + 2 + 1 + 4)
    assert pooled_word_errors([], []) == (0, 0)
    # the same counts as jiwer's S + D + I, pair by pair
    for reference, hypothesis in [(r, h) for r, h in zip(references, hypotheses) if r and h]:
        out = jiwer.process_words(reference, hypothesis)
        assert word_errors(reference, hypothesis) == out.substitutions + out.deletions + out.insertions
