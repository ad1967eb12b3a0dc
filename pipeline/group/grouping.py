"""Group cuts whose n-best word sets overlap, in time linear in the number of cuts.

Each cut is represented by its *word set* ``W``: the union of the words of its
first ``top_k`` hypotheses. Two cuts belong together when the Jaccard
similarity of their word sets reaches a threshold ``t``::

    J(A, B) = |A ∩ B| / |A ∪ B|  >=  t

Comparing all pairs is quadratic, so candidate pairs are found with MinHash
and locality-sensitive hashing (LSH), then checked exactly (steps 1-3,
:mod:`.lsh`):

1. **MinHash.** Words are mapped to integer ids with a dict (the word sets
   are kept as sorted id arrays for step 3). Every word also gets a number
   ``x``, the CRC-32 of its UTF-8 bytes, so that a cut's signature does not
   depend on which other cuts came first (two words with the same CRC only
   add candidates, which step 3 rejects), and ``num_perm``
   universal hash functions ``h_i(x) = (a_i x + b_i) mod p`` with the Mersenne
   prime ``p = 2**31 - 1`` and random ``(a_i, b_i)`` drawn from ``seed``. A
   cut's signature is ``sig_i(W) = min_{x in W} h_i(x)``. Each ``h_i`` acts as
   a random ordering of the words, and the first word of ``A ∪ B`` in that order
   lies in ``A ∩ B`` with probability ``J(A, B)``, hence::

       P[sig_i(A) == sig_i(B)] = J(A, B)

2. **Banding.** The signature is cut into ``b = bands`` bands of
   ``r = num_perm / bands`` rows. Cuts with the same values in a band share
   a *bucket*; two cuts become candidates when they share a bucket in at least
   one band. For a pair with similarity ``s`` that happens with probability::

       P(s) = 1 - (1 - s**r)**b

   an S-shaped curve that rises around ``(1/b)**(1/r)`` (0.25 here). With the default
   ``num_perm=32, bands=16`` (``r=2``), ``P(0.5) = 0.990``, ``P(0.3) = 0.78``
   and ``P(0.1) = 0.15``: pairs at the threshold are almost always found, and
   the cost of the low rise point is only extra candidates, all of which are
   checked in step 3. (``bands=8, r=4`` would find only 40% of pairs at 0.5.)

3. **Verified links.** In every band the cuts are put in a fresh random
   order; each bucket's first cut in that order is its representative, and
   every other member is checked against the representative and against the
   member just before it. A checked pair is linked *only if* the exact Jaccard
   similarity of the two word sets reaches ``t``. Sharing a bucket is
   evidence, not proof: without this check a cut that shares a few common
   words with two different prompts would glue both prompts into one group.
   The random order makes a cut meet different partners in different bands
   (a noisy reading may pass the threshold with only one other reading of its
   prompt), and pairs whose cuts are already connected are skipped, so most of
   the checking happens in the first few bands.

4. **Components.** Groups are the connected components of the verified links
   (:mod:`choral.kernels.components`). A component is a chain of links that
   each pass the threshold; it can still be larger than one prompt when prompts
   really overlap, so components larger than ``max_group_size`` are split
   (:mod:`.split`). With ``s`` cuts in a component and
   ``k = ceil(s / max_group_size)``, all pairs of its cuts are merged closest
   first, refusing any merge that would exceed the balanced size
   ``ceil(s / k)`` (size-capped single linkage). "Closest" is the Euclidean
   distance between pooled embeddings when the caller can provide them
   (prompts of one template overlap in words as much as two readings of one
   prompt, but readings of the same words sound alike), else the exact Jaccard
   similarity, among pairs that reach the threshold. The clusters are then
   packed, first fit by decreasing size, into as few groups of at most
   ``max_group_size`` as that finds. A component too large to compare all its
   pairs (more than ``split.REFINE_LIMIT`` cuts) is first cut into consecutive
   pieces of its single-linkage order (merging along the most similar verified
   links first, so that every cluster of similar cuts is a contiguous run), and
   each piece is split alone.

5. **Singletons by sound** (``acoustic_neighbours = k > 0``, :mod:`.acoustic`).
   Cuts the first four steps leave alone (their hypotheses share too few words
   with anything: words the teacher never heard, heavy accents) are linked to
   their mutual ``k`` nearest singletons by pooled-embedding cosine, and the links
   are merged most similar first up to ``acoustic_max_size`` cuts (mutual links
   chain: on the development draw, ``k = 8`` joined all 184 of a pool's
   singletons into one group). The graph stage's DTW
   threshold still decides which of their pairs become edges.

Cuts with an empty word set (no hypotheses, or only empty text) are never
candidates of steps 1-4 and stay singletons unless step 5 groups them. Everything is vectorised over chunks of cuts;
the only per-cut Python work is joining and splitting the hypothesis strings.
The result is deterministic for the same input and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...kernels.components import component_labels
from ..errors import ConfigError
from .acoustic import group_singletons
from .lsh import ChunkMap, detection_probability, verified_links, word_sets_and_signatures
from .split import refine_split, split_large

__all__ = ["GroupingConfig", "Grouping", "group_hypotheses", "detection_probability"]


@dataclass(frozen=True)
class GroupingConfig:
    """Parameters of :func:`group_hypotheses` (validated on construction).

    ``bands`` defaults to 16 (2 rows per band), so that pairs at the default
    threshold 0.5 are candidates with probability 0.99 (see the module notes).
    """

    top_k: int = 3  # hypotheses per cut whose words form its word set
    jaccard_threshold: float = 0.5  # cuts belong together when word-set Jaccard >= this
    num_perm: int = 32  # MinHash permutations (= bands * rows)
    bands: int = 16  # LSH bands
    max_group_size: int = 200  # larger components are split into chunks no bigger than this
    seed: int = 0
    acoustic_neighbours: int = 4  # > 0: singletons left by word overlap are grouped by sound (mutual k-NN, step 5)
    acoustic_max_size: int = 32   # step 5's groups hold at most this many cuts (mutual links chain; it stops them)

    def __post_init__(self) -> None:
        for name in ("top_k", "num_perm", "bands", "max_group_size", "seed", "acoustic_neighbours",
                     "acoustic_max_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(name, f"must be an integer, not {value!r}")
        for name in ("top_k", "num_perm", "bands", "max_group_size", "acoustic_max_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, not {getattr(self, name)}")
        for name in ("seed", "acoustic_neighbours"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be non-negative, not {getattr(self, name)}")
        if self.num_perm % self.bands:
            raise ConfigError(
                "num_perm", f"({self.num_perm}) must be divisible by {{bands}} ({self.bands}): "
                "every band takes num_perm / bands signature rows", related=("bands",))
        threshold = self.jaccard_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
            raise ConfigError("jaccard_threshold", f"must be a number, not {threshold!r}")
        if not 0.0 < threshold <= 1.0:
            raise ConfigError("jaccard_threshold", f"must be in (0, 1], not {threshold}")

    @property
    def rows(self) -> int:
        """Signature rows per LSH band."""
        return self.num_perm // self.bands

    def detection_probability(self, similarity: float) -> float:
        """Probability that a pair with this Jaccard similarity becomes a candidate."""
        return detection_probability(similarity, self.bands, self.rows)


@dataclass(frozen=True, eq=False)
class Grouping:
    """Group label of every cut.

    ``labels[i]`` is cut ``i``'s group, numbered ``0..n_groups-1`` in order of
    first appearance; ``sizes[g]`` is the number of cuts in group ``g``;
    ``n_split`` counts the components that were larger than ``max_group_size``
    and had to be split.
    """

    labels: np.ndarray
    sizes: np.ndarray
    n_split: int = 0
    by_sound: np.ndarray | None = None  # per group: True when step 5 formed it (its cuts share no words)

    @property
    def n_cuts(self) -> int:
        """Number of cuts grouped."""
        return int(self.labels.size)

    @property
    def n_groups(self) -> int:
        """Number of groups, singletons included."""
        return int(self.sizes.size)

    @property
    def n_singletons(self) -> int:
        """Number of groups with a single cut."""
        return int(np.count_nonzero(self.sizes == 1))

    @property
    def largest(self) -> int:
        """Size of the largest group (0 when there are no cuts)."""
        return int(self.sizes.max()) if self.sizes.size else 0

    def is_singleton(self) -> np.ndarray:
        """Boolean mask over cuts: True where the cut is alone in its group."""
        return self.sizes[self.labels] == 1


def group_hypotheses(
    hypotheses: Sequence[Sequence[str]],
    config: GroupingConfig = GroupingConfig(),
    progress: Callable[[int], None] | None = None,
    embeddings: Callable[[np.ndarray], np.ndarray | None] | None = None,
    map_chunks: ChunkMap | None = None,
    chunk_cuts: int | None = None,
) -> Grouping:
    """Group cuts whose top-k word sets have Jaccard similarity >= the threshold.

    ``hypotheses[i]`` holds cut ``i``'s normalised n-best texts, best first.
    ``progress(n)`` is called with the number of cuts processed so far.
    ``embeddings(indices)``, when given, returns the pooled embeddings of those
    cuts (one row each, or None when they are not comparable); it is called for cuts of components too large to
    keep, which are then split by acoustic similarity rather than word overlap, and (with
    ``acoustic_neighbours``) for the singletons, which step 5 groups by sound.
    ``map_chunks`` (an executor's ``map``) hashes chunks of ``chunk_cuts`` cuts in parallel (step 1);
    the grouping is the same. Banding, linking and splitting stay here: they need all signatures at once
    (``num_perm`` x 4 bytes per cut) and the word sets (4 bytes per distinct word of each cut).
    """
    n = len(hypotheses)
    rng = np.random.default_rng(config.seed)
    sets, signatures = word_sets_and_signatures(hypotheses, config.num_perm, config.top_k, rng, progress,
                                                map_chunks, chunk_cuts)
    links = verified_links(sets, signatures, config.bands, config.jaccard_threshold, rng)
    del signatures
    components = component_labels(n, links[0], links[1])
    labels, n_split = split_large(components, links, config.max_group_size)
    if n_split:
        labels = refine_split(components, labels, sets.incidence(), config.jaccard_threshold,
                              config.max_group_size, embeddings)
    sound = np.zeros(n, dtype=bool)
    if config.acoustic_neighbours and embeddings is not None:
        labels, sound = _group_singletons(labels, config, embeddings)
    labels = _number_by_first_appearance(labels)
    sizes = np.bincount(labels).astype(np.int64)
    by_sound = np.zeros(sizes.size, dtype=bool)
    by_sound[labels[sound]] = True
    by_sound &= sizes > 1
    for array in (labels, sizes, by_sound):
        array.setflags(write=False)
    return Grouping(labels=labels, sizes=sizes, n_split=n_split, by_sound=by_sound)


def _group_singletons(labels: np.ndarray, config: GroupingConfig,
                      embeddings: Callable[[np.ndarray], np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Step 5: the singletons of ``labels`` regrouped by their pooled embeddings (:mod:`.acoustic`), and the
    mask of the cuts it regrouped; unchanged when fewer than two or when their embeddings are not comparable."""
    regrouped = np.zeros(labels.size, dtype=bool)
    if labels.size == 0:
        return labels, regrouped
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    alone = np.flatnonzero(counts[inverse.reshape(-1)] == 1)
    vectors = embeddings(alone) if alone.size >= 2 else None
    if vectors is None:
        return labels, regrouped
    clusters = group_singletons(np.asarray(vectors, dtype=np.float64), config.acoustic_neighbours,
                                min(config.acoustic_max_size, config.max_group_size))
    out = labels.astype(np.int64, copy=True)
    out[alone] = int(labels.max()) + 1 + clusters
    regrouped[alone] = True
    return out, regrouped


def _number_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1 in the order in which they first occur."""
    if labels.size == 0:
        return labels.astype(np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.reshape(-1)]
