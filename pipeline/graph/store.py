"""``graph.npz``: the similarity graph over all cuts, and how to read it back.

One symmetric scipy CSR adjacency over every cut of the grouped manifest, in
manifest order (``cut_ids``); edges only join cuts of the same group, so the
matrix is block-diagonal by group up to a permutation. Beside the binary
adjacency the file keeps every within-group pair with its distance, so later
stages can re-threshold (a tuned threshold scale) or weight edges by distance
without recomputing the distances.

:class:`ArrayReader` reads the cut arrays the graph (and the grouping's split)
measures: lhotse's ``numpy_hdf5`` storage keeps one HDF5 dataset per cut, and
opening it through lhotse costs a cache lookup, a reader object and h5py's
high-level indexing per cut; the reader keeps each file open and reads the
datasets with h5py's low-level calls, several times faster. Other storages, and
temporal arrays (which lhotse slices to the cut), go through lhotse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp
from lhotse.array import Array
from lhotse.cut import Cut

from ..errors import InputError
from ..fields import custom_field, load_array
from ..manifest import atomic_output


@dataclass(frozen=True)
class CutGraph:
    """Cut ids, candidate pairs with distances, and the thresholded binary adjacency."""

    cut_ids: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    distances: np.ndarray
    threshold: float
    metric: str
    pair_sound: np.ndarray | None = None   # per pair: inside a group formed by sound alone (None: no such pair)
    sound_nearest: int = 0                 # such pairs also link each cut to its k nearest ...
    sound_reach: float = 0.0               # ... when within this multiple of the threshold (0: any distance)
    isolated_reach: float = 0.0            # word groups: a cut with no edge links to its nearest within this x (0: off)
    sound_threshold: float | None = None   # the scale of pairs formed by sound (None: the learned threshold)
    annotated_a: np.ndarray | None = None  # cross-group pairs (cut, one of its nearest annotated cuts) ...
    annotated_b: np.ndarray | None = None  # ... (:mod:`.annotated`; None: not measured) ...
    annotated_distances: np.ndarray | None = None  # ... and their distances, for propagate's retrieval

    @property
    def sound_scale(self) -> float:
        """The distance the sound reaches multiply: the split of the sound pairs' two modes
        (:func:`~.threshold.bimodal_split`) where the graph found one, else the learned threshold."""
        return self.sound_threshold if self.sound_threshold is not None else self.threshold

    @property
    def n_cuts(self) -> int:
        return len(self.cut_ids)

    def adjacency(self, threshold: float | None = None, weighted: bool = False, nearest: int = 0,
                  threshold_edges: bool = True) -> sp.csr_matrix:
        """Symmetric adjacency linking pairs with distance <= threshold (the stored one by default).

        ``nearest=k`` also links every cut to its ``k`` nearest candidates (same group),
        whatever the threshold: readings by different voices sit at different distances,
        and a cut's own nearest neighbours are more often the same words than a global
        cut-off admits. ``threshold_edges=False`` (with ``nearest``) keeps the k-nearest edges alone:
        a graph whose every cut has at least ``min(k, group size - 1)`` neighbours, however far.
        ``weighted=True`` gives edge weight ``exp(-d / threshold)`` instead of 1.
        """
        threshold = self.threshold if threshold is None else threshold
        keep = self.distances <= threshold if threshold_edges else np.zeros(len(self.distances), dtype=bool)
        if nearest > 0 and len(self.distances):
            keep = keep | self.nearest_pairs(nearest)
        keep = keep | self.sound_edges(threshold)
        keep = keep | self.isolated_edges(threshold, keep)
        a, b, d = self.pair_a[keep], self.pair_b[keep], self.distances[keep]
        weights = np.exp(-d / threshold) if weighted and threshold > 0 else np.ones(len(d))
        rows = np.concatenate([a, b])
        cols = np.concatenate([b, a])
        data = np.concatenate([weights, weights]).astype(np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(self.n_cuts, self.n_cuts))

    def sound_edges(self, threshold: float) -> np.ndarray:
        """Mask of the pairs of groups formed by sound that link a cut to one of its ``sound_nearest`` nearest,
        within ``sound_reach`` times ``threshold``.

        Such groups hold cuts whose hypotheses share too few words (words the teacher never heard): their
        readings of one text sit further apart than the threshold learned on word-grouped pairs allows, but
        a cut's nearest in its group is still most often a reading of the same words. ``threshold`` is the one
        :meth:`adjacency` is asked for, so ``choral tune``'s threshold scale moves the reach too; tune's
        cross-validation counts these cuts, so it sees what the scale does to them (on the development draw it
        chose 0.8 on both pools: a reach of 1.6 x the learned threshold)."""
        mask = np.zeros(len(self.distances), dtype=bool)
        if self.pair_sound is None or self.sound_nearest < 1 or not self.pair_sound.any():
            return mask
        mask = self.pair_sound & self.nearest_pairs(self.sound_nearest)
        if self.sound_reach > 0:  # tune's scale of the threshold moves the reach in proportion
            mask &= self.distances <= self.sound_reach * self.sound_scale * threshold / max(self.threshold, 1e-30)
        return mask

    def isolated_edges(self, threshold: float, keep: np.ndarray) -> np.ndarray:
        """Mask of the pairs that link a cut of a word group with no edge in ``keep`` to its nearest candidate,
        when within ``isolated_reach`` times ``threshold``.

        A reading the threshold leaves alone (noise, a far voice) has no neighbour to learn from, yet its nearest
        reading in its group is most often of the same words (on the development draw, 94% of the noisy condition's
        cuts in word groups, at 1.2-1.5 x the threshold). The link lets the group's texts reach it as candidates; the
        calibrated decision (with the teacher's veto: the words are ones the teacher says) still has to accept them."""
        mask = np.zeros(len(self.distances), dtype=bool)
        if self.isolated_reach <= 0 or not len(self.distances):
            return mask
        word = ~self.pair_sound if self.pair_sound is not None else np.ones(len(self.distances), dtype=bool)
        if not word.any():  # every pair is in a group formed by sound
            return mask
        linked = np.zeros(self.n_cuts, dtype=bool)
        linked[self.pair_a[keep]] = True
        linked[self.pair_b[keep]] = True
        word_pairs = np.flatnonzero(word)
        pair, cut, rank = _ranked_by_cut(self.pair_a[word], self.pair_b[word], self.distances[word])
        nearest = word_pairs[pair[rank == 0]]              # each word-group cut's nearest candidate
        lonely = ~linked[cut[rank == 0]] & (self.distances[nearest] <= self.isolated_reach * threshold)
        mask[nearest[lonely]] = True
        return mask

    def sound_distances(self) -> sp.csr_matrix:
        """Symmetric matrix of every pair of a group formed by sound, valued ``d / threshold`` (the learned
        threshold; + 1e-12, so a distance of 0 stays an entry): how far a cut is from each of its group's cuts,
        edge or not (the decision's ``unheard_reach``)."""
        if self.pair_sound is None or not self.pair_sound.any():
            return sp.csr_matrix((self.n_cuts, self.n_cuts))
        a, b = self.pair_a[self.pair_sound], self.pair_b[self.pair_sound]
        d = self.distances[self.pair_sound] / max(self.sound_scale, 1e-30) + 1e-12
        return sp.csr_matrix((np.concatenate([d, d]), (np.concatenate([a, b]), np.concatenate([b, a]))),
                             shape=(self.n_cuts, self.n_cuts))

    def nearest_pairs(self, k: int) -> np.ndarray:
        """Mask of pairs that are among the ``k`` closest candidates of either of their cuts."""
        pair, _, rank = _ranked_by_cut(self.pair_a, self.pair_b, self.distances)
        mask = np.zeros(len(self.distances), dtype=bool)
        mask[pair[rank < k]] = True
        return mask

    def save(self, path: str | Path) -> None:
        """Write atomically: CSR arrays of the binary adjacency plus the pair list."""
        adjacency = self.adjacency()
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as stream:
                np.savez_compressed(
                    stream,
                    cut_ids=np.asarray(self.cut_ids, dtype=str),
                    indptr=adjacency.indptr,
                    indices=adjacency.indices,
                    data=adjacency.data,
                    shape=np.asarray(adjacency.shape),
                    pair_a=self.pair_a,
                    pair_b=self.pair_b,
                    distances=self.distances,
                    threshold=np.float64(self.threshold),
                    metric=np.asarray(self.metric),
                    pair_sound=(self.pair_sound if self.pair_sound is not None
                                else np.zeros(len(self.distances), dtype=bool)),
                    sound_nearest=np.int64(self.sound_nearest),
                    sound_reach=np.float64(self.sound_reach),
                    isolated_reach=np.float64(self.isolated_reach),
                    sound_threshold=np.float64(np.nan if self.sound_threshold is None else self.sound_threshold),
                    annotated_a=_or_empty(self.annotated_a, np.int64),
                    annotated_b=_or_empty(self.annotated_b, np.int64),
                    annotated_distances=_or_empty(self.annotated_distances, np.float64),
                )

    @classmethod
    def load(cls, path: str | Path) -> "CutGraph":
        """Read a ``graph.npz`` written by :meth:`save`; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    cut_ids=data["cut_ids"],
                    pair_a=data["pair_a"],
                    pair_b=data["pair_b"],
                    distances=data["distances"],
                    threshold=float(data["threshold"]),
                    metric=str(data["metric"]),
                    # graphs written before groups formed by sound have none of these
                    pair_sound=data["pair_sound"] if "pair_sound" in data.files else None,
                    sound_nearest=int(data["sound_nearest"]) if "sound_nearest" in data.files else 0,
                    sound_reach=float(data["sound_reach"]) if "sound_reach" in data.files else 0.0,
                    isolated_reach=float(data["isolated_reach"]) if "isolated_reach" in data.files else 0.0,
                    sound_threshold=_optional(data, "sound_threshold"),
                    # graphs written before the retrieval have no annotated pairs
                    annotated_a=data["annotated_a"] if "annotated_a" in data.files else None,
                    annotated_b=data["annotated_b"] if "annotated_b" in data.files else None,
                    annotated_distances=(data["annotated_distances"] if "annotated_distances" in data.files
                                         else None),
                )
        except (OSError, KeyError, ValueError) as error:
            raise InputError(path, f"not a choral graph file ({error})") from None


def _ranked_by_cut(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair listed under both its cuts, sorted by cut then distance: (pair index, cut, rank of the pair
    among that cut's pairs, 0 = its nearest)."""
    ends = np.concatenate([a, b])
    order = np.lexsort((np.concatenate([d, d]), ends))
    sorted_ends = ends[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_ends, sorted_ends, side="left")
    return np.concatenate([np.arange(len(d)), np.arange(len(d))])[order], sorted_ends, rank


def _or_empty(values: np.ndarray | None, dtype: type) -> np.ndarray:
    """``values``, or an empty array of ``dtype`` (what :meth:`CutGraph.save` writes for arrays not measured)."""
    return np.zeros(0, dtype=dtype) if values is None else values


def _optional(data: np.lib.npyio.NpzFile, name: str) -> float | None:
    """A stored float that may be absent (older files) or NaN (none found)."""
    if name not in data.files or not np.isfinite(float(data[name])):
        return None
    return float(data[name])


def load_adjacency(path: str | Path) -> tuple[np.ndarray, sp.csr_matrix]:
    """The cut ids and the stored binary CSR adjacency, as other tools would read them."""
    with np.load(path, allow_pickle=False) as data:
        matrix = sp.csr_matrix((data["data"], data["indices"], data["indptr"]), shape=tuple(data["shape"]))
        return data["cut_ids"], matrix


class ArrayReader:
    """``load(cut, name)``: what :func:`choral.pipeline.fields.load_array` returns (float32, checked to be
    non-empty and finite, errors naming ``source`` and the cut), with each ``numpy_hdf5`` file opened once.

    Use as a context manager (or call :meth:`close`): it holds the HDF5 files open.
    """

    def __init__(self, source: str | Path) -> None:
        self.source = source
        self._files: dict[str, h5py.File] = {}

    def load(self, cut: Cut, name: str) -> np.ndarray:
        value = custom_field(cut, name)
        if type(value) is not Array or value.storage_type != "numpy_hdf5":
            return load_array(cut, name, self.source)
        try:
            array = self._read(value.storage_path, value.storage_key)
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise InputError(self.source, f"cannot load custom.{name} ({error})", cut_id=cut.id) from None
        if array.size == 0:
            raise InputError(self.source, f"custom.{name} is empty", cut_id=cut.id)
        if not np.all(np.isfinite(array)):
            raise InputError(self.source, f"custom.{name} holds NaN or infinite values", cut_id=cut.id)
        return array

    def read(self, storage_path: str, key: str) -> np.ndarray:
        """The dataset ``key`` of the HDF5 file ``storage_path`` as float32 (no checks)."""
        return self._read(storage_path, key)

    def _read(self, storage_path: str, key: str) -> np.ndarray:
        handle = self._files.get(storage_path)
        if handle is None:
            handle = self._files[storage_path] = h5py.File(storage_path, "r")
        dataset = h5py.h5d.open(handle.id, key.encode())
        out = np.empty(dataset.shape, dtype=dataset.dtype)
        if out.size:
            dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __enter__(self) -> "ArrayReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
