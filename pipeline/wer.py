"""Word errors (S + D + I) between normalised strings: the one WER implementation of eval and tune.

A pair with an empty side is counted here (every reference word deleted, or every hypothesis word
inserted), since older jiwer versions reject empty references; the other pairs are aligned by one
jiwer call, since jiwer's per-call overhead, not the alignment, dominates on short utterances.
"""

from __future__ import annotations

from typing import Sequence

import jiwer


def _chunk_errors(chunk: jiwer.AlignmentChunk) -> int:
    """Word errors in one alignment chunk: reference words substituted or deleted, hypothesis words inserted."""
    if chunk.type in ("substitute", "delete"):
        return chunk.ref_end_idx - chunk.ref_start_idx
    if chunk.type == "insert":
        return chunk.hyp_end_idx - chunk.hyp_start_idx
    return 0


def _pair_errors(references: Sequence[str], hypotheses: Sequence[str]) -> list[int]:
    """Word errors of each (reference, hypothesis) pair."""
    lengths = [(len(r.split()), len(h.split())) for r, h in zip(references, hypotheses)]
    errors = [n_hyp if not n_ref else n_ref if not n_hyp else -1 for n_ref, n_hyp in lengths]
    pending = [i for i, e in enumerate(errors) if e < 0]
    if pending:
        output = jiwer.process_words([references[i] for i in pending], [hypotheses[i] for i in pending])
        for i, alignment in zip(pending, output.alignments):
            errors[i] = sum(_chunk_errors(chunk) for chunk in alignment)
    return errors


def word_errors_many(reference: str, hypotheses: Sequence[str]) -> list[int]:
    """Word errors of each normalised hypothesis against one normalised reference."""
    return _pair_errors([reference] * len(hypotheses), hypotheses)


def word_errors(reference: str, hypothesis: str) -> int:
    """Word errors between two normalised strings."""
    return _pair_errors([reference], [hypothesis])[0]


def pooled_word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[int, int]:
    """(word errors, reference words) summed over cuts; an empty reference counts its insertions.

    Their ratio is the corpus-level WER.
    """
    return sum(_pair_errors(references, hypotheses)), sum(len(r.split()) for r in references)
