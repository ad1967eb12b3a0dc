"""Steps 1-3 of the grouping (:mod:`.grouping`): MinHash signatures, LSH banding, verified links.

Each cut's word set gets a MinHash signature (one minimum per universal hash
function); cuts sharing all signature rows of a band are candidates, and a
candidate pair is linked only if the exact Jaccard similarity of the two word
sets reaches the threshold. The module notes of :mod:`.grouping` give the
probabilities behind the banding.
"""

from __future__ import annotations

import itertools
import operator
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from ...kernels.components import component_labels

__all__ = ["THRESHOLD_EPS", "ChunkMap", "WordSets", "detection_probability", "verified_links",
           "word_sets_and_signatures"]

# ``map(fn, items, shared) -> [fn(shared, item) for item in items]``, as an executor runs it (in parallel)
ChunkMap = Callable[[Callable[[Any, Any], Any], Sequence[Any], Any], list[Any]]

_PRIME = np.uint64((1 << 31) - 1)  # Mersenne prime 2**31 - 1: hashes fit in uint32
_SEPARATOR = "\x00"  # word that separates cuts in the joined text of a chunk; id 0
_CHUNK_CUTS = 32_768  # cuts tokenised and min-hashed at a time (bounds temporary memory)
_CHUNK_PAIRS = 262_144  # candidate pairs verified at a time
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant that mixes band rows into one key
THRESHOLD_EPS = 1e-9  # tolerance so that J exactly equal to the threshold passes


def detection_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that LSH makes a pair with Jaccard ``similarity`` a candidate: 1-(1-s^r)^b."""
    return 1.0 - (1.0 - similarity**rows) ** bands


@dataclass
class WordSets:
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


# --- step 1: word sets and MinHash signatures ----------------------------------------------


def word_sets_and_signatures(
    hypotheses: Sequence[Sequence[str]],
    num_perm: int,
    top_k: int,
    rng: np.random.Generator,
    progress: Callable[[int], None] | None,
    map_chunks: ChunkMap | None = None,
    chunk_cuts: int | None = None,
) -> tuple[WordSets, np.ndarray]:
    """Word sets (CSR) of the first ``top_k`` hypotheses and MinHash signatures (uint32, num_perm x n_cuts).

    ``progress(n)`` is called with the number of cuts processed so far. With ``map_chunks`` (an executor's
    ``map``) chunks of ``chunk_cuts`` cuts are hashed in parallel: a signature depends only on its cut's
    words and the drawn hash functions, and word ids are given in order of first appearance over the chunks
    in order, so the result is the same as the serial one, id for id.
    """
    n = len(hypotheses)
    vocab = _Vocabulary(
        a=rng.integers(1, int(_PRIME), num_perm, dtype=np.uint64),
        b=rng.integers(0, int(_PRIME), num_perm, dtype=np.uint64),
    )
    if map_chunks is not None:
        return _mapped_signatures(hypotheses, top_k, vocab, map_chunks, chunk_cuts or _CHUNK_CUTS, progress)
    signatures = np.full((num_perm, n), np.iinfo(np.uint32).max, np.uint32)
    counts = np.zeros(n, np.int64)
    words: list[np.ndarray] = []
    for start in range(0, n, _CHUNK_CUTS):
        chunk = hypotheses[start : start + _CHUNK_CUTS]
        chunk_counts, chunk_words = _chunk_word_sets(chunk, top_k, vocab)
        counts[start : start + len(chunk)] = chunk_counts
        words.append(chunk_words)
        _minhash_into(signatures[:, start : start + len(chunk)], chunk_counts, chunk_words, vocab.hashes)
        if progress is not None:
            progress(start + len(chunk))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    all_words = np.concatenate(words) if words else np.zeros(0, np.int32)
    return WordSets(indptr=indptr, words=all_words), signatures


def _signed_chunk(coefficients: tuple[np.ndarray, np.ndarray, int], chunk: Sequence[Sequence[str]]
                  ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """One chunk alone (a worker's item): word-set sizes, word ids in the chunk's own vocabulary, that
    vocabulary's words in id order, and the chunk's signatures."""
    a, b, top_k = coefficients
    vocab = _Vocabulary(a, b)
    counts, words = _chunk_word_sets(chunk, top_k, vocab)
    signatures = np.full((a.size, len(chunk)), np.iinfo(np.uint32).max, np.uint32)
    _minhash_into(signatures, counts, words, vocab.hashes)
    return counts, words, list(vocab.ids), signatures


def _mapped_signatures(hypotheses: Sequence[Sequence[str]], top_k: int, vocab: _Vocabulary, map_chunks: ChunkMap,
                       chunk_cuts: int, progress: Callable[[int], None] | None) -> tuple[WordSets, np.ndarray]:
    """:func:`word_sets_and_signatures` with the chunks hashed by ``map_chunks``; chunk vocabularies are
    merged into ``vocab`` in chunk order (its ids are then those of a serial pass)."""
    chunks = [list(hypotheses[start : start + chunk_cuts]) for start in range(0, len(hypotheses), chunk_cuts)]
    parts = map_chunks(_signed_chunk, chunks, (vocab.a[:, 0], vocab.b[:, 0], top_k))
    counts_of, words_of, signatures_of = [], [], []
    for counts, words, names, signatures in parts:
        remap = vocab.lookup(names)  # chunk id -> global id, new words numbered as a serial pass would
        cut = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
        keys = np.sort((cut << 32) | remap[words])  # each cut's word ids sorted again
        words_of.append((keys & 0xFFFF_FFFF).astype(np.int32))
        counts_of.append(counts)
        signatures_of.append(signatures)
    n = len(hypotheses)
    indptr = np.zeros(n + 1, np.int64)
    if counts_of:
        np.cumsum(np.concatenate(counts_of), out=indptr[1:])
    all_words = np.concatenate(words_of) if words_of else np.zeros(0, np.int32)
    signatures = (np.concatenate(signatures_of, axis=1) if signatures_of
                  else np.zeros((vocab.a.size, 0), np.uint32))
    if progress is not None:
        progress(n)
    return WordSets(indptr=indptr, words=all_words), signatures


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


def verified_links(
    sets: WordSets, signatures: np.ndarray, bands: int, threshold: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links ``(u, v, jaccard)`` between bucket-mates whose Jaccard similarity reaches ``threshold``.

    The signature rows are cut into ``bands`` bands of equal height.
    """
    n = signatures.shape[1]
    active = np.flatnonzero(sets.sizes)  # cuts with an empty word set are never candidates
    labels = np.arange(n)
    incidence = sets.incidence()
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    rows = signatures.shape[0] // bands
    for band in range(bands):
        cuts = rng.permutation(active)
        keys = _band_keys(signatures[band * rows : (band + 1) * rows][:, cuts])
        u, v = _bucket_pairs(keys, cuts)
        unconnected = labels[u] != labels[v]
        u, v = u[unconnected], v[unconnected]
        similarity = _jaccard(incidence, u, v)
        ok = similarity >= threshold - THRESHOLD_EPS
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


def _merge(labels: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Component labels after adding links ``u - v`` to components ``labels``."""
    return component_labels(labels.size, labels[u], labels[v])[labels]

