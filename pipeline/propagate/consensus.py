"""Word-level consensus: align weighted transcripts into a confusion network and read its best paths.

Candidate sharing lets a cut take a neighbour's transcript only as a whole. When every
neighbour gets a different word wrong, no whole transcript is right, yet each word is right
in most of them. This module combines them word by word (in the manner of ROVER, Fiscus 1997):

**Alignment.** Inputs ``(h_1, w_1), ..., (h_m, w_m)`` (word sequences, positive weights) are
added in the given order (the caller sorts them by weight, heaviest first) to a network of
*slots*; slot ``s`` holds a weight ``W_s(x)`` for every word ``x`` voted there, and for the
empty word ``ε``. ``h_1`` makes one slot per word. Each later ``h_j`` is aligned to the slots by
edit distance with costs

    match  (slot s, word x):  0 if W_s(x) > 0 else 1
    skip   (slot s, no word): 0 if W_s(ε) > 0 else 1      (h_j votes ε in s)
    insert (word x, no slot): 1                             (a new slot: x with w_j, ε with all earlier weight)

(ties prefer match, then skip, then insert, so the alignment is deterministic). After every
input has been added, each slot's votes sum to ``Σ_j w_j``.

**Slot posteriors and paths.** ``P_s(x) = W_s(x) / Σ_j w_j``. A path picks one entry per
slot; its posterior under slot independence is ``π(path) = Π_s P_s(x_s)``, and its text drops
the ``ε``'s. Every input is itself a path (the entries it voted for). :func:`best_paths`
returns the ``k`` distinct texts with the highest path posteriors (beam search over the slots,
beam ``k + m``, the posterior of a text being its best path's).

**Candidates.** :func:`consensus_candidates` keeps the best paths that are no input (nor
excluded) and scores each against the heaviest input ``h_1``: ``ρ(c) = π(c) / π(h_1)``. Where
every slot's majority is ``h_1``'s word, ``ρ < 1`` for every combination; a combination beats
``h_1`` (``ρ > 1``) only by taking words that out-vote ``h_1``'s in their slots. Three inputs of
equal weight, each with a different one of three words wrong, give ``π(h_j) = (2/3)^2 (1/3)``
and the all-majority combination ``π = (2/3)^3``, so ``ρ = 2``.

Pure computation on word lists (no teacher, no graph): :mod:`.engine` feeds it a cut's
neighbourhood and lets the teacher score what comes out.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import AbstractSet, Sequence

EPSILON = ""  # the empty word of a slot


@dataclass
class ConfusionNetwork:
    """Slots of word votes; every slot's votes sum to ``total``."""

    slots: list[dict[str, float]] = field(default_factory=list)
    total: float = 0.0
    paths: list[list[str]] = field(default_factory=list)   # per input, the entry it voted for in every slot

    def add(self, words: Sequence[str], weight: float) -> None:
        """Align ``words`` to the slots (the costs of the module docstring) and add its votes."""
        if weight <= 0 or not math.isfinite(weight):
            raise ValueError(f"a transcript's weight must be positive and finite, not {weight}")
        if not self.slots and self.total == 0:
            self.slots = [{w: weight} for w in words]
            self.total = weight
            self.paths = [list(words)]
            return
        path: list[str] = []
        for kind, slot, word in _align(self.slots, list(words)):
            if kind == "match":
                self.slots[slot][word] = self.slots[slot].get(word, 0.0) + weight
            elif kind == "skip":
                self.slots[slot][EPSILON] = self.slots[slot].get(EPSILON, 0.0) + weight
            else:  # insert before slot index ``slot`` (already shifted by earlier inserts)
                self.slots.insert(slot, {word: weight, EPSILON: self.total} if self.total > 0 else {word: weight})
                for earlier in self.paths:
                    earlier.insert(slot, EPSILON)
            path.append(word)
        self.paths.append(path)
        self.total += weight

    def log_posterior(self, path: Sequence[str]) -> float:
        """``log π(path)`` of a path given as one entry per slot."""
        return sum(math.log(slot[x]) for slot, x in zip(self.posteriors(), path))

    def posteriors(self) -> list[dict[str, float]]:
        """``P_s(x)`` for every slot."""
        return [{x: v / self.total for x, v in slot.items()} for slot in self.slots]


def _align(slots: list[dict[str, float]], words: list[str]) -> list[tuple[str, int, str]]:
    """The cheapest edit path of ``words`` against ``slots``: ("match", slot, word), ("skip", slot, ""),
    ("insert", position, word) in order, positions counting the slots inserted before them."""
    n, m = len(slots), len(words)
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    move = [[""] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 and j == 0:
                continue
            options = []
            if i > 0 and j > 0:
                options.append((cost[i - 1][j - 1] + (0.0 if words[j - 1] in slots[i - 1] else 1.0), 0, "match"))
            if i > 0:
                options.append((cost[i - 1][j] + (0.0 if EPSILON in slots[i - 1] else 1.0), 1, "skip"))
            if j > 0:
                options.append((cost[i][j - 1] + 1.0, 2, "insert"))
            best = min(options)
            cost[i][j], move[i][j] = best[0], best[2]
    steps: list[tuple[str, int, str]] = []
    i, j = n, m
    while i > 0 or j > 0:
        kind = move[i][j]
        if kind == "match":
            steps.append(("match", i - 1, words[j - 1]))
            i, j = i - 1, j - 1
        elif kind == "skip":
            steps.append(("skip", i - 1, EPSILON))
            i -= 1
        else:
            steps.append(("insert", i, words[j - 1]))
            j -= 1
    steps.reverse()
    # an insert at original position i lands after the slots inserted before it
    shifted, inserted = [], 0
    for kind, slot, word in steps:
        shifted.append((kind, slot + inserted, word))
        inserted += kind == "insert"
    return shifted


def build_network(transcripts: Sequence[tuple[Sequence[str], float]]) -> ConfusionNetwork:
    """The network of ``(words, weight)`` inputs, added in the order given."""
    network = ConfusionNetwork()
    for words, weight in transcripts:
        network.add(words, weight)
    return network


def best_paths(network: ConfusionNetwork, k: int, beam: int | None = None) -> list[tuple[str, float]]:
    """The ``k`` distinct texts (words joined by spaces) with the highest path posteriors, best first,
    as ``(text, log posterior)``; ties go to the lexicographically smaller text."""
    if k <= 0 or not network.slots:
        return []
    width = max(beam or k, k)
    # a partial path: (negative log posterior, words so far)
    paths: list[tuple[float, tuple[str, ...]]] = [(0.0, ())]
    for slot in network.posteriors():
        options = [(x, -math.log(p)) for x, p in slot.items() if p > 0]
        expanded = [(cost + extra, words + ((x,) if x != EPSILON else ())) for cost, words in paths
                    for x, extra in options]
        paths = heapq.nsmallest(width, expanded)
    best: dict[str, float] = {}
    for cost, words in paths:
        text = " ".join(words)
        if text and (text not in best or -cost > best[text]):
            best[text] = -cost
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]


def consensus_candidates(transcripts: Sequence[tuple[str, float]], k: int, exclude: AbstractSet[str] = frozenset()
                         ) -> list[tuple[str, float]]:
    """Up to ``k`` combined texts of ``(text, weight)`` inputs (heaviest first) that are not in ``exclude``
    nor among the inputs, as ``(text, ρ)`` with ``ρ = π(text) / π(first input)``, best first."""
    inputs = [(text.split(), weight) for text, weight in transcripts if weight > 0 and text]
    if len(inputs) < 2 or k <= 0:
        return []
    network = build_network(inputs)
    first = network.log_posterior(network.paths[0])
    known = set(exclude) | {" ".join(words) for words, _ in inputs}
    paths = best_paths(network, k + len(known), beam=k + len(inputs) + 4)
    return [(text, math.exp(logp - first)) for text, logp in paths if text not in known][:k]
