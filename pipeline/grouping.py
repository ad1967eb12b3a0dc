"""Group cuts whose n-best word sets overlap, in time linear in the number of cuts.

Each cut is represented by its *word set* ``W``: the union of the words of its
first ``top_k`` hypotheses. Two cuts belong together when the Jaccard
similarity of their word sets reaches a threshold ``t``::

    J(A, B) = |A ∩ B| / |A ∪ B|  >=  t

Comparing all pairs is quadratic, so candidate pairs are found with MinHash
and locality-sensitive hashing (LSH), then checked exactly:

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
   (``scipy.sparse.csgraph``). A component is a chain of links that each pass
   the threshold; it can still be larger than one prompt when prompts really
   overlap, so components larger than ``max_group_size`` are split: their
   members are put in single-linkage order (merging along the most similar
   links first, so that every cluster of similar cuts is a contiguous run) and
   that order is cut into ``ceil(size / max_group_size)`` chunks of equal size
   (sizes differ by at most one, so there is no tiny leftover).

Cuts with an empty word set (no hypotheses, or only empty text) are never
candidates and stay singletons. Everything is vectorised over chunks of cuts;
the only per-cut Python work is joining and splitting the hypothesis strings.
The result is deterministic for the same input and seed.
"""

from __future__ import annotations

import itertools
import operator
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["GroupingConfig", "Grouping", "group_hypotheses", "detection_probability"]

_PRIME = np.uint64((1 << 31) - 1)  # Mersenne prime 2**31 - 1: hashes fit in uint32
_SEPARATOR = "\x00"  # word that separates cuts in the joined text of a chunk; id 0
_CHUNK_CUTS = 32_768  # cuts tokenised and min-hashed at a time (bounds temporary memory)
_CHUNK_PAIRS = 262_144  # candidate pairs verified at a time
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant that mixes band rows into one key
_EPS = 1e-9  # tolerance so that J exactly equal to the threshold passes


def detection_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that LSH makes a pair with Jaccard ``similarity`` a candidate: 1-(1-s^r)^b."""
    return 1.0 - (1.0 - similarity**rows) ** bands


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

    def __post_init__(self) -> None:
        for name in ("top_k", "num_perm", "bands", "max_group_size", "seed"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, not {value!r}")
        for name in ("top_k", "num_perm", "bands", "max_group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, not {self.seed}")
        if self.num_perm % self.bands:
            raise ValueError(
                f"num_perm ({self.num_perm}) must be divisible by bands ({self.bands}): "
                "every band takes num_perm / bands signature rows"
            )
        threshold = self.jaccard_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
            raise ValueError(f"jaccard_threshold must be a number, not {threshold!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"jaccard_threshold must be in (0, 1], not {threshold}")

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


@dataclass
class _WordSets:
    """Each cut's word set as sorted word ids, in CSR layout (``words[indptr[i]:indptr[i+1]]``)."""

    indptr: np.ndarray  # int64 (n_cuts + 1,)
    words: np.ndarray  # int32 (total,)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.indptr)

    def incidence(self) -> csr_matrix:
        """Binary cut x word matrix sharing this CSR layout (no copy of the word ids)."""
        n_words = int(self.words.max()) + 1 if self.words.size else 1
        matrix = csr_matrix(
            (np.ones(self.words.size, np.int8), self.words, self.indptr),
            shape=(self.indptr.size - 1, n_words),
        )
        matrix.has_sorted_indices = True  # words are sorted within each cut
        return matrix


class _Vocabulary:
    """Word -> id (in order of first appearance) and each id's MinHash values.

    ``hashes[i, id] = h_i(crc32(word))``: every distinct word is hashed once, and
    a cut's hashes are gathered from this table by word id.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        self.a = a[:, None]  # uint64 (num_perm, 1), in [1, p)
        self.b = b[:, None]  # uint64 (num_perm, 1), in [0, p)
        # A missing word gets the next id inside the dict lookup itself (no Python loop).
        self.ids: defaultdict[str, int] = defaultdict()
        self.ids.default_factory = self.ids.__len__
        self.ids[_SEPARATOR]  # id 0
        self.hashes = np.zeros((a.size, 1024), np.uint32)
        self.n_hashed = 0

    def lookup(self, tokens: list[str]) -> np.ndarray:
        """Ids of ``tokens``, adding unseen words (and their hashes)."""
        ids = np.fromiter(map(self.ids.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        self._hash_new_words()
        return ids

    def _hash_new_words(self) -> None:
        size = len(self.ids)
        if size == self.n_hashed:
            return
        new_words = itertools.islice(self.ids, self.n_hashed, None)
        x = np.fromiter((zlib.crc32(w.encode()) for w in new_words), np.uint64, size - self.n_hashed)
        if size > self.hashes.shape[1]:
            grown = np.zeros((self.hashes.shape[0], max(size, 2 * self.hashes.shape[1])), np.uint32)
            grown[:, : self.n_hashed] = self.hashes[:, : self.n_hashed]
            self.hashes = grown
        # a < 2**31 and x < 2**32, so a*x + b < 2**64: no overflow in uint64.
        self.hashes[:, self.n_hashed : size] = (self.a * x + self.b) % _PRIME
        self.n_hashed = size


def group_hypotheses(
    hypotheses: Sequence[Sequence[str]],
    config: GroupingConfig = GroupingConfig(),
    progress: Callable[[int], None] | None = None,
    embeddings: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> Grouping:
    """Group cuts whose top-k word sets have Jaccard similarity >= the threshold.

    ``hypotheses[i]`` holds cut ``i``'s normalised n-best texts, best first.
    ``progress(n)`` is called with the number of cuts processed so far.
    ``embeddings(indices)``, when given, returns the pooled embeddings of those
    cuts (one row each, or None when they are not comparable); it is called only for cuts of components too large to
    keep, which are then split by acoustic similarity rather than word overlap.
    """
    n = len(hypotheses)
    rng = np.random.default_rng(config.seed)
    sets, signatures = _word_sets_and_signatures(hypotheses, config, rng, progress)
    links = _verified_links(sets, signatures, config, rng)
    del signatures
    components = _components(n, links[0], links[1])
    labels, n_split = _split_large(components, links, config.max_group_size)
    if n_split:
        labels = _refine_split(components, labels, sets.incidence(), config, embeddings)
    labels = _number_by_first_appearance(labels)
    sizes = np.bincount(labels).astype(np.int64)
    labels.setflags(write=False)
    sizes.setflags(write=False)
    return Grouping(labels=labels, sizes=sizes, n_split=n_split)


# --- step 0: word sets and MinHash signatures ----------------------------------------------


def _word_sets_and_signatures(
    hypotheses: Sequence[Sequence[str]],
    config: GroupingConfig,
    rng: np.random.Generator,
    progress: Callable[[int], None] | None,
) -> tuple[_WordSets, np.ndarray]:
    """Word sets (CSR) and MinHash signatures (uint32, num_perm x n_cuts) of all cuts."""
    n = len(hypotheses)
    vocab = _Vocabulary(
        a=rng.integers(1, int(_PRIME), config.num_perm, dtype=np.uint64),
        b=rng.integers(0, int(_PRIME), config.num_perm, dtype=np.uint64),
    )
    signatures = np.full((config.num_perm, n), np.iinfo(np.uint32).max, np.uint32)
    counts = np.zeros(n, np.int64)
    words: list[np.ndarray] = []
    for start in range(0, n, _CHUNK_CUTS):
        chunk = hypotheses[start : start + _CHUNK_CUTS]
        chunk_counts, chunk_words = _chunk_word_sets(chunk, config.top_k, vocab)
        counts[start : start + len(chunk)] = chunk_counts
        words.append(chunk_words)
        _minhash_into(signatures[:, start : start + len(chunk)], chunk_counts, chunk_words, vocab.hashes)
        if progress is not None:
            progress(start + len(chunk))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    all_words = np.concatenate(words) if words else np.zeros(0, np.int32)
    return _WordSets(indptr=indptr, words=all_words), signatures


def _chunk_word_sets(
    chunk: Sequence[Sequence[str]], top_k: int, vocab: _Vocabulary
) -> tuple[np.ndarray, np.ndarray]:
    """Word-set sizes and concatenated sorted word ids of a chunk of cuts.

    The chunk's top-k texts are joined into one string with a separator word
    between cuts and split once, so the per-cut Python work is two C-level
    ``map`` calls; cut boundaries are then found from the separator's id.
    """
    if any(isinstance(cut, str) for cut in chunk):
        raise TypeError("each cut's hypotheses must be a sequence of strings, not one string")
    first_k = operator.itemgetter(slice(0, top_k))
    text = f" {_SEPARATOR} ".join(map(" ".join, map(first_k, chunk)))
    ids = vocab.lookup(text.split())
    is_separator = ids == 0
    if np.count_nonzero(is_separator) != len(chunk) - 1:
        raise ValueError(f"hypothesis text must not contain the word {_SEPARATOR!r}")
    cut = np.cumsum(is_separator)[~is_separator]
    # One sort orders cuts and the words within each cut (key = cut << 32 | word id);
    # dropping repeats of the previous key leaves each cut's word set.
    keys = np.sort((cut << 32) | ids[~is_separator])
    if keys.size:
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    counts = np.bincount(keys >> 32, minlength=len(chunk))
    return counts, (keys & 0xFFFF_FFFF).astype(np.int32)


def _minhash_into(out: np.ndarray, counts: np.ndarray, words: np.ndarray, hashes: np.ndarray) -> None:
    """Write each non-empty cut's signature: per hash function, the minimum over its words.

    One 1-d ``minimum.reduceat`` per hash function over the cuts' word runs is
    several times faster than a single 2-d reduction over (word, hash) rows.
    """
    nonempty = np.flatnonzero(counts)
    if nonempty.size == 0:
        return
    starts = (np.cumsum(counts) - counts)[nonempty]
    for row, hash_row in zip(out, hashes):
        row[nonempty] = np.minimum.reduceat(hash_row.take(words), starts)


# --- steps 2-3: LSH candidates and verified links --------------------------------------------


def _verified_links(
    sets: _WordSets, signatures: np.ndarray, config: GroupingConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links ``(u, v, jaccard)`` between bucket-mates that pass the threshold, over all bands."""
    n = signatures.shape[1]
    active = np.flatnonzero(sets.sizes)  # cuts with an empty word set are never candidates
    labels = np.arange(n)
    incidence = sets.incidence()
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    rows = config.rows
    for band in range(config.bands):
        cuts = rng.permutation(active)
        keys = _band_keys(signatures[band * rows : (band + 1) * rows][:, cuts])
        u, v = _bucket_pairs(keys, cuts)
        unconnected = labels[u] != labels[v]
        u, v = u[unconnected], v[unconnected]
        similarity = _jaccard(incidence, u, v)
        ok = similarity >= config.jaccard_threshold - _EPS
        if np.any(ok):
            found.append((u[ok], v[ok], similarity[ok]))
            labels = _merge(labels, u[ok], v[ok])
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    u, v, w = zip(*found)
    return np.concatenate(u), np.concatenate(v), np.concatenate(w)


def _band_keys(band: np.ndarray) -> np.ndarray:
    """One uint64 key per cut (column) from its ``r`` signature values (rows) in a band.

    Two rows are packed exactly; more rows are mixed by multiply-xor, where a
    rare accidental collision only adds a candidate that verification rejects.
    """
    columns = band.astype(np.uint64)
    if len(columns) <= 2:
        return (columns[0] << np.uint64(32)) | (columns[1] if len(columns) == 2 else np.uint64(0))
    key = np.zeros(band.shape[1], np.uint64)
    for column in columns:
        key = (key ^ column) * _MIX
        key ^= key >> np.uint64(29)
    return key


def _bucket_pairs(keys: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(earlier, member)`` inside the buckets of equal ``keys``.

    Within a bucket, cuts keep their order in ``cuts`` (stable sort). Every
    member after the first is paired with the bucket's first cut (its
    representative) and with the member just before it: two checks per cut,
    linear in the bucket size, that still give a noisy member two chances.
    """
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts_bucket = np.ones(order.size, bool)
    starts_bucket[1:] = sorted_keys[1:] != sorted_keys[:-1]
    bucket_start = np.maximum.accumulate(np.where(starts_bucket, np.arange(order.size), 0))
    members = np.flatnonzero(~starts_bucket)
    representative = bucket_start[members]
    previous = members - 1
    extra = previous != representative
    earlier = np.concatenate([representative, previous[extra]])
    member = np.concatenate([members, members[extra]])
    return cuts[order[earlier]], cuts[order[member]]


def _jaccard(incidence: csr_matrix, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the word sets of cuts ``u[j]`` and ``v[j]``.

    ``|A ∩ B|`` is the number of stored entries in the element-wise product of
    the two incidence rows (scipy merges the sorted rows in C), and
    ``|A ∪ B| = |A| + |B| - |A ∩ B|``.
    """
    sizes = np.diff(incidence.indptr)
    similarity = np.zeros(u.size)
    for start in range(0, u.size, _CHUNK_PAIRS):
        cu, cv = u[start : start + _CHUNK_PAIRS], v[start : start + _CHUNK_PAIRS]
        common = np.diff(incidence[cu].multiply(incidence[cv]).tocsr().indptr)
        union = sizes[cu] + sizes[cv] - common
        similarity[start : start + cu.size] = common / np.maximum(union, 1)
    return similarity


# --- step 4: components and splitting ----------------------------------------------------------


def _merge(labels: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Component labels after adding links ``u - v`` to components ``labels``."""
    return _components(labels.size, labels[u], labels[v])[labels]


def _components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes under undirected edges ``u - v``."""
    # int32 weights: duplicate edges are summed, which must not wrap around to zero.
    graph = coo_matrix((np.ones(u.size, np.int32), (u, v)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _split_large(
    components: np.ndarray, links: tuple[np.ndarray, np.ndarray, np.ndarray], max_size: int
) -> tuple[np.ndarray, int]:
    """Split components larger than ``max_size`` into equal chunks of similar cuts.

    Members of a large component are put in single-linkage order (see
    :func:`_single_linkage_order`), in which every cluster of mutually linked,
    similar cuts is a contiguous run, and the order is cut into
    ``k = ceil(size / max_size)`` chunks whose sizes differ by at most one.
    """
    n = components.size
    component_sizes = np.bincount(components) if n else np.zeros(0, np.int64)
    large = component_sizes > max_size
    if not np.any(large):
        return components, 0
    members = np.flatnonzero(large[components])  # cuts of large components, in input order
    u, v, similarity = links
    inside = large[components[u]]
    local_u, local_v = np.searchsorted(members, u[inside]), np.searchsorted(members, v[inside])
    order = members[_single_linkage_order(members.size, local_u, local_v, similarity[inside])]
    chunk = np.zeros(n, np.int64)
    chunk[order] = _balanced_chunks(components[order], component_sizes, max_size)
    n_chunks = -(-component_sizes // max_size)
    return components * int(n_chunks.max()) + chunk, int(np.count_nonzero(large))


def _single_linkage_order(n: int, u: np.ndarray, v: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Order ``n`` nodes so that every single-linkage cluster of the links is contiguous.

    Kruskal's algorithm on the links, most similar first: each link that joins
    two clusters appends one cluster's node chain to the other's. Clusters only
    ever grow by concatenation, so at every similarity level each cluster is
    one contiguous run of the final chain (the leaf order of the single-linkage
    dendrogram). Connected components come out one after another, each
    starting with its first node. One Python step per link of the large
    components only.
    """
    parent = list(range(n))
    nxt = [-1] * n  # next node in its cluster's chain
    tail = list(range(n))  # last node of the chain headed by a root
    strongest_first = np.argsort(-similarity, kind="stable")
    for a, b in zip(u[strongest_first].tolist(), v[strongest_first].tolist()):
        a, b = _find(parent, a), _find(parent, b)
        if a == b:
            continue
        if b < a:  # the cluster with the smaller first node keeps the head
            a, b = b, a
        parent[b] = a
        nxt[tail[a]] = b
        tail[a] = tail[b]
    order: list[int] = []
    for head in range(n):
        if parent[head] == head:  # a root heads its chain; roots are visited in input order
            node = head
            while node != -1:
                order.append(node)
                node = nxt[node]
    return np.asarray(order, dtype=np.int64)


def _find(parent: list[int], node: int) -> int:
    """Root of ``node`` in a union-find forest, halving the path on the way."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def _balanced_chunks(component: np.ndarray, component_sizes: np.ndarray, max_size: int) -> np.ndarray:
    """Chunk of each position in the order: ``k = ceil(s / max_size)`` chunks, sizes differing by <= 1."""
    is_start = np.ones(component.size, bool)
    is_start[1:] = component[1:] != component[:-1]
    start = np.maximum.accumulate(np.where(is_start, np.arange(component.size), 0))
    position = np.arange(component.size) - start
    size = component_sizes[component]
    return position * (-(-size // max_size)) // size


_REFINE_LIMIT = 4096  # cuts of one coarse chunk compared all-pairs during refinement


def _refine_split(
    components: np.ndarray,
    coarse: np.ndarray,
    incidence: csr_matrix,
    config: GroupingConfig,
    embeddings: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> np.ndarray:
    """Re-split large components so that the most similar cuts stay together.

    Word overlap alone cannot tell apart prompts of one template ("weather in
    boston today" / "weather in denver today" overlap as much as two readings
    of one prompt), so when ``embeddings`` are available the merges below are
    ordered by Euclidean distance between pooled embeddings instead: readings
    of the same words sound alike.

    The links LSH verified form a sparse forest (pairs already connected are not
    checked), too weak to decide where a large component should be cut. For each
    large component (pre-cut by :func:`_split_large` into pieces of at most
    ``_REFINE_LIMIT`` cuts), exact Jaccard similarities of all its pairs above
    the threshold are merged strongest first, refusing any merge that would
    exceed the balanced size ``ceil(s / ceil(s / max_group_size))`` (size-capped
    single linkage). The resulting clusters are packed into as few groups of at
    most ``max_group_size`` as first fit by decreasing size finds, so nothing
    tiny is left over that need not be.
    """
    max_size = config.max_group_size
    labels = coarse.copy()
    sizes = np.bincount(components)
    large = np.flatnonzero(sizes > max_size)
    next_label = int(coarse.max()) + 1
    for component in large:
        members = np.flatnonzero(components == component)
        piece_of = coarse[members]
        if members.size > _REFINE_LIMIT:  # keep the coarse pieces, refine each at most this big
            coarse_pieces = [members[piece_of == c] for c in np.unique(piece_of)]
            pieces = _regroup(coarse_pieces, max(_REFINE_LIMIT, max_size))
        else:
            pieces = [members]
        for piece in pieces:
            vectors = None if embeddings is None else embeddings(piece)
            vectors = None if vectors is None else np.asarray(vectors, dtype=np.float64)
            for chunk in _capped_linkage(piece, incidence, config.jaccard_threshold, max_size, vectors):
                labels[chunk] = next_label
                next_label += 1
    return labels


def _regroup(pieces: list[np.ndarray], limit: int) -> list[np.ndarray]:
    """Concatenate consecutive pieces while they fit in ``limit`` cuts."""
    out: list[np.ndarray] = []
    for piece in pieces:
        if out and out[-1].size + piece.size <= limit:
            out[-1] = np.concatenate([out[-1], piece])
        else:
            out.append(piece)
    return out


def _capped_linkage(
    members: np.ndarray, incidence: csr_matrix, threshold: float, max_size: int, vectors: np.ndarray | None = None
) -> list[np.ndarray]:
    """Size-capped single linkage (closest embeddings, else highest Jaccard, first), then first-fit packing."""
    u, v = np.triu_indices(members.size, k=1)
    if vectors is not None:
        squared = np.einsum("ij,ij->i", vectors, vectors)
        gram = vectors @ vectors.T
        w = -(squared[u] + squared[v] - 2 * gram[u, v])  # higher = closer
    else:
        sub = incidence[members].astype(np.float32)
        intersection = (sub @ sub.T).toarray()
        set_sizes = np.diag(intersection).copy()
        union = set_sizes[:, None] + set_sizes[None, :] - intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            similarity = np.where(union > 0, intersection / union, 0.0)
        keep = similarity[u, v] >= threshold - _EPS
        u, v, w = u[keep], v[keep], similarity[u[keep], v[keep]]
    # merge up to the balanced size ceil(s / k), k = ceil(s / max_size): equal chunks when cuts are alike
    n_chunks = -(-members.size // max_size)
    cap = -(-members.size // n_chunks)
    strongest = np.argsort(-w, kind="stable")
    parent = list(range(members.size))
    size = [1] * members.size
    for a, b in zip(u[strongest].tolist(), v[strongest].tolist()):
        a, b = _find(parent, a), _find(parent, b)
        if a == b or size[a] + size[b] > cap:
            continue
        if b < a:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
    roots = np.array([_find(parent, i) for i in range(members.size)])
    clusters = [members[roots == r] for r in np.unique(roots)]
    clusters.sort(key=lambda c: -c.size)
    bins: list[list[np.ndarray]] = []
    room: list[int] = []
    for cluster in clusters:
        for index, free in enumerate(room):
            if cluster.size <= free:
                bins[index].append(cluster)
                room[index] -= cluster.size
                break
        else:
            bins.append([cluster])
            room.append(max_size - cluster.size)
    return [np.sort(np.concatenate(b)) for b in bins]


def _number_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1 in the order in which they first occur."""
    if labels.size == 0:
        return labels.astype(np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.reshape(-1)]
