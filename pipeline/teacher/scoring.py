"""Text scorers of the teacher layer: the batched scorer every backend hands out, and the named teacher scorer.

Scoring a borrowed transcript ``y`` of a cut is its RNN-T log-likelihood
``log P(y | x)`` (all alignments) given the cut's encoder frames. :class:`BatchScorer`
scores many ``(cut, text)`` pairs together: ``prefetch`` takes every pair a
propagation batch will ask for, encodes (or loads the stored frames of) the cuts
involved and scores them with :func:`score_pairs`. Scores are memoised per (cut, text)
(tuning asks for the same ones under every parameter combination), and optionally in a
:class:`~.score_memo.ScoreMemo` on disk that ``choral tune`` and ``choral propagate``
share across processes.

Where the time goes, and what :func:`score_pairs` does about it (measured by
``benchmarks/score_speed.py``): the joiner ``W tanh(e_t + p_u) + b`` at every lattice node
costs ``J`` tanh and ``J x V`` multiply-adds, far more than the forward algorithm. So

- a cut's texts (neighbours' transcripts of one utterance, alike at the start) form a
  prefix trie, and the joiner and predictor run once per (frame, trie node), not per
  (frame, text position); with a stateless predictor, nodes with equal predictor outputs
  (equal last symbols) share one joiner row too;
- the tanh joiner runs as ``2W σ(2e + 2p) + (b - W 1)`` (``tanh x = 2σ(2x) - 1``: the same
  function, and torch's sigmoid is several times cheaper than its tanh on CPU), on chunks
  of ``rows`` nodes that stay in cache, its output padded to whole SIMD blocks;
- normalisation is one ``logsumexp`` per node, and only the blank and the one label leaving
  the node are kept;
- the forward algorithm runs once per pass over every text of many cuts, padded
  ``(texts, T, U+1)``, in ``dtype`` (the joiner is float32 either way). float32 is the default:
  on the accented pool it gave the same labels as float64 and the old per-cut scorer, a
  little faster (``benchmarks/score_speed.py``).

An optional pruned lattice (``prune``: labels kept per frame around the best path,
:func:`~choral.kernels.rnnt.rnnt_pruned_log_likelihood`) is only a lower bound of the
likelihood: it changes decisions, and with a joiner call per frame and no tries it is now
slower than the full lattice (kept for comparison).

:class:`TeacherScorer` is what ``propagate`` and ``tune`` get for ``--teacher``:
its ``name`` and ``inputs`` are known at once, the teacher is opened on the first
call, so a stage found up to date loads no model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Protocol, Sequence

import numpy as np
import torch
from lhotse.cut import Cut

from ...kernels.rnnt import rnnt_log_likelihood_from_arcs, rnnt_pruned_log_likelihood
from ..errors import ChoralError
from .contracts import AudioError, Scorer
from .tokens import BLANK, TokenTable

log = logging.getLogger(__name__)

Request = tuple[str, Sequence[str]]  # (cut id, texts)


class LatticeModel(Protocol):
    """What lattice scoring needs of a transducer (a subset of :class:`~.search.Decodable`)."""

    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor: ...

    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor: ...

    def predict_along(self, targets: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ScoreOptions:
    """How lattices are scored: floating type of the forward algorithm, pruning, and pass size.

    ``prune`` = 0 scores the full lattice; ``prune`` = S keeps S labels per frame around
    the best path (faster, a lower bound of the full likelihood). ``elements`` bounds the
    padded lattice nodes ``texts x frames x (labels + 1)`` of one forward pass (a few
    tensors of that size are alive at once); ``rows`` the (frame, prefix) nodes of one joiner
    call (its ``rows x joiner_dim`` activations should stay in cache).
    """

    dtype: Literal["float32", "float64"] = "float32"
    prune: int = 0
    elements: int = 1 << 21
    rows: int = 2048

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"lattice dtype must be float32 or float64, not {self.dtype!r}")
        if self.prune < 0 or 0 < self.prune < 3:
            raise ValueError("prune must be 0 (full lattice) or at least 3 labels per frame")
        if self.elements < 1 or self.rows < 1:
            raise ValueError("elements and rows must be positive")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    @property
    def tag(self) -> str:
        """What distinguishes these scores from others of the same teacher (scorer names, memo keys)."""
        return self.dtype + (f",prune{self.prune}" if self.prune else "")


def _padded(rows: Sequence[torch.Tensor], length: int, fill: float = 0.0) -> torch.Tensor:
    out = rows[0].new_full((len(rows), length, *rows[0].shape[1:]), fill)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


@dataclass
class _Trie:
    """The distinct prefixes of one utterance's texts: node 0 is the empty prefix, node ``k > 0`` extends node
    ``parent[k]`` by ``symbol[k]``; ``paths[i]`` are the ``U_i + 1`` nodes text ``i`` passes through, and node
    ``k``'s predictor output is that of text ``source[k][0]`` after ``source[k][1]`` symbols."""

    parent: list[int]
    symbol: list[int]
    source: list[tuple[int, int]]
    paths: list[list[int]]


def _trie(token_lists: Sequence[Sequence[int]]) -> _Trie:
    children: dict[tuple[int, int], int] = {}
    trie = _Trie(parent=[0], symbol=[BLANK], source=[(0, 0)], paths=[])
    for i, tokens in enumerate(token_lists):
        node, path = 0, [0]
        for u, symbol in enumerate(tokens):
            child = children.get((node, symbol))
            if child is None:
                child = children[(node, symbol)] = len(trie.parent)
                trie.parent.append(node)
                trie.symbol.append(int(symbol))
                trie.source.append((i, u + 1))
            node = child
            path.append(node)
        trie.paths.append(path)
    return trie


def tanh_output_layer(model: LatticeModel) -> torch.nn.Linear | None:
    """The output layer ``W, b`` of a joiner ``join(e, p) = W tanh(e + p) + b`` (choral's torch teachers), or None.

    Checked on a random probe, so a model whose joiner only looks the part gets the generic path.
    """
    inner = getattr(model, "model", None)
    layer = getattr(inner, "joiner_out", None) or getattr(inner, "output_linear", None)
    if not isinstance(layer, torch.nn.Linear):
        return None
    with torch.inference_mode():
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(2, 3, layer.in_features, generator=generator).to(layer.weight.device,
                                                                               layer.weight.dtype)
        try:
            expected = model.join(probe[0], probe[1])
        except Exception:  # noqa: BLE001 - any failure means "not this joiner"
            return None
        got = layer(torch.tanh(probe[0] + probe[1]))
        return layer if expected.shape == got.shape and torch.allclose(expected, got, atol=1e-5) else None


class _NodeArcs:
    """Blank and label log-probs of every (frame, prefix) node of one utterance's trie, from the joiner.

    With a tanh joiner ``W tanh(e + p) + b`` the joiner runs as ``W' σ(2e + 2p) + b'`` with ``W' = 2W`` and
    ``b' = b - W 1`` (``tanh x = 2σ(2x) - 1``): the same logits, and a sigmoid costs far less than a tanh on
    CPU. Normalisation needs one ``logsumexp`` over the vocabulary per node; only the blank and the one label
    on the node's outgoing trie edge are kept, each node computed once however many texts share its prefix.
    """

    def __init__(self, model: LatticeModel, rows: int) -> None:
        self.model = model
        self.rows = rows
        layer = tanh_output_layer(model)
        self.weight: torch.Tensor | None = None
        self.bias = torch.zeros(0)
        if layer is not None:
            weight = layer.weight.detach()
            bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(weight[:, 0])
            vocab = weight.shape[0]
            padded = -(-vocab // 16) * 16  # whole SIMD blocks of output columns: a faster GEMM
            self.weight = weight.new_zeros(weight.shape[1], padded)
            self.weight[:, :vocab] = 2 * weight.t()  # (J, V')
            self.bias = weight.new_full((padded,), float("-inf"))  # padding columns: logits exp() to 0
            self.bias[:vocab] = (bias.double() - weight.double().sum(1)).to(weight.dtype)

    def __call__(self, enc_p: torch.Tensor, node_pred: torch.Tensor, trie: _Trie, dedupe: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``blank (T, N)`` at each node and ``label (T, N)`` of the edge into each node (0 at the root).

        ``dedupe``: nodes whose predictor outputs are bitwise equal (a stateless predictor sees only the last
        few symbols, so different prefixes often end alike) share one joiner evaluation.
        """
        frames, nodes = enc_p.shape[0], node_pred.shape[0]
        device = enc_p.device
        inverse = torch.arange(nodes, device=device)
        if dedupe:
            first: dict[bytes, int] = {}
            ids = [first.setdefault(row.tobytes(), len(first)) for row in node_pred.cpu().numpy()]
            if len(first) < nodes:
                inverse = torch.tensor(ids, device=device)
                node_pred = node_pred[torch.tensor(_first_rows(ids, len(first)), device=device)]
        distinct = node_pred.shape[0]
        parent = inverse[torch.tensor(trie.parent[1:], dtype=torch.long, device=device)]
        symbol = torch.tensor(trie.symbol[1:], dtype=torch.long, device=device)
        blank = torch.empty(frames, nodes, dtype=torch.float32, device=device)
        label = torch.zeros(frames, nodes, dtype=torch.float32, device=device)
        step = max(1, self.rows // distinct)
        if self.weight is not None:
            enc2, pred2 = 2 * enc_p, 2 * node_pred
            hidden = torch.empty(step, distinct, enc_p.shape[1], dtype=enc_p.dtype, device=device)
        for t0 in range(0, frames, step):
            t1 = min(frames, t0 + step)
            if self.weight is not None:
                h = torch.add(enc2[t0:t1, None, :], pred2[None, :, :], out=hidden[: t1 - t0]).sigmoid_()
                logits = torch.addmm(self.bias, h.view(-1, h.shape[-1]), self.weight).view(t1 - t0, distinct, -1)
                logits = logits.float()  # a float16 joiner: normalise in float32
            else:
                logits = self.model.join(enc_p[None, t0:t1, None, :], node_pred[None, None, :, :])[0].float()
            norm = torch.logsumexp(logits, dim=-1)  # (t, N')
            blank[t0:t1] = (logits[..., BLANK] - norm)[:, inverse] if distinct < nodes else logits[..., BLANK] - norm
            label[t0:t1, 1:] = logits[:, parent, symbol] - norm[:, parent]
        return blank, label


def _first_rows(ids: list[int], count: int) -> list[int]:
    """For each of ``count`` distinct ids, the first position holding it."""
    rows = [-1] * count
    for position, key in enumerate(ids):
        if rows[key] < 0:
            rows[key] = position
    return rows


@torch.inference_mode()
def score_pairs(model: LatticeModel, projected: Sequence[torch.Tensor], pairs: Sequence[tuple[int, Sequence[int]]],
                options: ScoreOptions = ScoreOptions()) -> list[float]:
    """``log P(y | x)`` of each pair ``(utterance index, token ids)``, ``projected[i]`` being utterance ``i``'s
    encoder frames after ``model.project_encoder`` ``(T_i, J)``.

    Full lattice: each utterance's texts become a prefix trie; the joiner runs once per (frame, trie node)
    (:class:`_NodeArcs`), in chunks of ``options.rows`` nodes that stay in cache; utterances sorted by ``T``
    are cut into passes of ``options.elements`` padded lattice nodes, and a pass gathers every text's
    ``(T, U+1)`` arcs from its trie and runs :func:`~choral.kernels.rnnt.rnnt_log_likelihood_from_arcs` once.
    Pruned (``options.prune``): pairs sorted by ``(T, U)``, the joiner on ``prune`` nodes per frame inside
    :func:`~choral.kernels.rnnt.rnnt_pruned_log_likelihood`.
    """
    if not pairs:
        return []
    if options.prune:
        return _score_pruned(model, projected, pairs, options)
    device = projected[0].device
    texts_of: dict[int, dict[tuple[int, ...], int]] = {}
    for index, tokens in pairs:
        texts_of.setdefault(index, {}).setdefault(tuple(int(s) for s in tokens), len(texts_of[index]))
    utterances = sorted(texts_of, key=lambda i: projected[i].shape[0])
    arcs = _NodeArcs(model, options.rows)
    scores: dict[tuple[int, tuple[int, ...]], float] = {}
    begin = 0
    while begin < len(utterances):
        end, texts, longest = begin, 0, 0
        while end < len(utterances):
            index = utterances[end]
            grown = max(longest, max(len(t) for t in texts_of[index]))
            size = (texts + len(texts_of[index])) * projected[index].shape[0] * (grown + 1)
            if end > begin and size > options.elements:
                break
            end, texts, longest = end + 1, texts + len(texts_of[index]), grown
        group = utterances[begin:end]
        values = _full_pass(model, [projected[i] for i in group], [list(texts_of[i]) for i in group], arcs,
                            options.torch_dtype, device)
        for index, row in zip(group, values):
            scores.update(((index, tokens), value) for tokens, value in zip(texts_of[index], row))
        begin = end
    return [scores[(index, tuple(int(s) for s in tokens))] for index, tokens in pairs]


def _trie_predictions(model: LatticeModel, tries: list[_Trie], token_lists: list[list[tuple[int, ...]]],
                      device: torch.device) -> list[torch.Tensor]:
    """Predictor outputs ``(N, J)`` of every trie node.

    A model that steps its predictor (``start`` / ``advance`` / ``select``, as beam search does) runs it once
    per trie level over that level's nodes of every trie, so a prefix shared by several texts is predicted
    once; otherwise ``predict_along`` runs over the texts, sorted by length to keep padding small.
    """
    if all(hasattr(model, name) for name in ("start", "advance", "select")):
        stepping: Any = model
        offsets = [0]
        for trie in tries:
            offsets.append(offsets[-1] + len(trie.parent))
        depth = [0] * offsets[-1]
        levels: list[list[int]] = [[]]  # the nodes (numbered across tries) of each depth > 0
        parent_of = [0] * offsets[-1]
        symbol_of = [BLANK] * offsets[-1]
        for trie, offset in zip(tries, offsets):
            for node in range(1, len(trie.parent)):
                at, parent = offset + node, offset + trie.parent[node]
                depth[at] = depth[parent] + 1
                parent_of[at], symbol_of[at] = parent, trie.symbol[node]
                if len(levels) <= depth[at]:
                    levels.append([])
                levels[depth[at]].append(at)
        root, state = stepping.start(1, device)
        out = root.new_empty(offsets[-1], root.shape[-1])
        out[torch.tensor(offsets[:-1], device=device)] = root[0]
        row_of = {offset: 0 for offset in offsets[:-1]}  # a node's row in the previous level's state
        for level in levels[1:]:
            parents = torch.tensor([row_of[parent_of[at]] for at in level], device=device)
            symbols = torch.tensor([symbol_of[at] for at in level], device=device)
            predicted, state = stepping.advance(symbols, stepping.select(state, parents))
            out[torch.tensor(level, device=device)] = predicted.to(root.dtype)
            row_of = {at: row for row, at in enumerate(level)}
        return [out[begin:end] for begin, end in zip(offsets[:-1], offsets[1:])]
    flat = [(k, i, tokens) for k, texts in enumerate(token_lists) for i, tokens in enumerate(texts)]
    flat.sort(key=lambda item: len(item[2]))
    per_text: dict[tuple[int, int], torch.Tensor] = {}
    for begin in range(0, len(flat), 256):
        group = flat[begin: begin + 256]
        targets = torch.full((len(group), max(1, len(group[-1][2]))), BLANK, dtype=torch.long)
        for row, (_, _, tokens) in enumerate(group):
            if tokens:
                targets[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        predicted = model.predict_along(targets.to(device)).to(device)  # (texts, U+1, J)
        per_text.update(((k, i), predicted[row]) for row, (k, i, _) in enumerate(group))
    return [torch.stack([per_text[(k, i)][u] for i, u in trie.source]) for k, trie in enumerate(tries)]


def _full_pass(model: LatticeModel, frames: list[torch.Tensor], token_lists: list[list[tuple[int, ...]]],
               arcs: _NodeArcs, dtype: torch.dtype, device: torch.device) -> list[list[float]]:
    """Scores of each utterance's texts: tries, node arcs, one padded forward pass over every text."""
    tries = [_trie(texts) for texts in token_lists]
    node_preds = _trie_predictions(model, tries, token_lists, device)
    dedupe = isinstance(getattr(model, "context_size", None), int)  # a predictor that sees the last few symbols
    blanks, labels, index_rows = [], [], []
    offset = 0
    frame_lengths, target_lengths = [], []
    for enc_p, trie, node_pred in zip(frames, tries, node_preds):
        blank, label = arcs(enc_p, node_pred, trie, dedupe)
        blanks.append(blank.reshape(-1))
        labels.append(label.reshape(-1))
        count, nodes = enc_p.shape[0], blank.shape[1]
        for path in trie.paths:
            index_rows.append((offset, count, nodes, path))
            frame_lengths.append(count)
            target_lengths.append(len(path) - 1)
        offset += count * nodes
    longest = max(target_lengths)
    most = max(frame_lengths)
    paths = torch.tensor([path + [path[-1]] * (longest + 1 - len(path)) for _, _, _, path in index_rows],
                         dtype=torch.long, device=device)  # (B, U+1)
    starts = torch.tensor([row[0] for row in index_rows], device=device)
    widths = torch.tensor([row[2] for row in index_rows], device=device)
    lengths = torch.tensor(frame_lengths, device=device)
    t = torch.minimum(torch.arange(most, device=device)[None, :], lengths[:, None] - 1)  # (B, T)
    index = (starts[:, None] + t * widths[:, None])[:, :, None] + paths[:, None, :]  # (B, T, U+1)
    blank_lp = torch.cat(blanks)[index].to(dtype)
    label_lp = torch.cat(labels)[index[:, :, 1:]].to(dtype)
    values = rnnt_log_likelihood_from_arcs(blank_lp, label_lp, lengths, torch.tensor(target_lengths, device=device))
    out, position = [], 0
    for texts in token_lists:
        out.append(values[position: position + len(texts)].tolist())
        position += len(texts)
    return out


def _score_pruned(model: LatticeModel, projected: Sequence[torch.Tensor],
                  pairs: Sequence[tuple[int, Sequence[int]]], options: ScoreOptions) -> list[float]:
    """Pruned lattices: texts shorter than the band get the full lattice (nothing to prune); the others are
    sorted by ``(T, U)`` and cut into passes of at most ``options.elements`` kept nodes."""
    out = [0.0] * len(pairs)
    short = [i for i, (_, tokens) in enumerate(pairs) if len(tokens) < options.prune]
    full = score_pairs(model, projected, [pairs[i] for i in short], replace(options, prune=0))
    for i, score in zip(short, full):
        out[i] = score
    device = projected[0].device
    order = sorted((i for i, (_, tokens) in enumerate(pairs) if len(tokens) >= options.prune),
                   key=lambda i: (projected[pairs[i][0]].shape[0], len(pairs[i][1])))
    begin = 0
    while begin < len(order):
        end = begin + 1  # frames only grow along `order`
        while end < len(order) and (end + 1 - begin) * projected[pairs[order[end]][0]].shape[0] * options.prune \
                <= options.elements:
            end += 1
        chunk = order[begin:end]
        n = len(chunk)
        frame_lengths = torch.tensor([projected[pairs[i][0]].shape[0] for i in chunk], device=device)
        target_lengths = torch.tensor([len(pairs[i][1]) for i in chunk], device=device)
        targets = torch.full((n, int(target_lengths.max())), BLANK, dtype=torch.long)
        for row, i in enumerate(chunk):
            targets[row, : len(pairs[i][1])] = torch.as_tensor(list(pairs[i][1]), dtype=torch.long)
        targets = targets.to(device)
        enc_p = _padded([projected[pairs[i][0]] for i in chunk], int(frame_lengths.max()))  # (n, T, J)
        pred_p = model.predict_along(targets).to(device)  # (n, U+1, J)
        scores = _pruned_pass(model, enc_p, pred_p, targets, frame_lengths, target_lengths, options,
                              options.torch_dtype)
        for i, score in zip(chunk, scores.tolist()):
            out[i] = score
        begin = end
    return out


def _pruned_pass(model: LatticeModel, enc_p: torch.Tensor, pred_p: torch.Tensor, targets: torch.Tensor,
                 frame_lengths: torch.Tensor, target_lengths: torch.Tensor, options: ScoreOptions,
                 dtype: torch.dtype) -> torch.Tensor:
    width = options.prune
    longest = targets.shape[1]
    offsets = torch.arange(width, device=enc_p.device)
    joiner_dim = pred_p.shape[-1]

    def arcs_at(t: int, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nodes = (starts[:, None] + offsets[None, :]).clamp(max=longest)  # (n, width)
        window = torch.gather(pred_p, 1, nodes[:, :, None].expand(-1, -1, joiner_dim))
        log_probs = model.join(enc_p[:, t, None, :], window).float().log_softmax(-1)  # (n, width, V)
        symbols = torch.gather(targets, 1, nodes.clamp(max=longest - 1))
        return log_probs[..., BLANK], torch.gather(log_probs, 2, symbols[:, :, None]).squeeze(2)

    return rnnt_pruned_log_likelihood(arcs_at, frame_lengths, target_lengths, width, dtype=dtype)


class ScoreStore(Protocol):
    """A persistent memo of scores (see :class:`~.score_memo.ScoreMemo`)."""

    def get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]: ...

    def put_many(self, items: dict[tuple[str, str], float]) -> None: ...


class BatchScorer:
    """A :class:`~.contracts.Scorer` over ``cuts`` that scores requests in batches (see the module docstring).

    ``encode(cuts)`` gives each cut's encoder frames ``(T_i, D)`` (before
    ``model.project_encoder``), raising :class:`~.contracts.AudioError` for cuts whose
    audio is unusable; ``tokens`` turns texts into the model's symbol ids.
    """

    def __init__(self, cuts: Iterable[Cut], model: LatticeModel, encode: Callable[[list[Cut]], list[torch.Tensor]],
                 tokens: TokenTable, options: ScoreOptions = ScoreOptions(), *, batch_cuts: int = 256,
                 store: ScoreStore | None = None) -> None:
        self.by_id = {cut.id: cut for cut in cuts}
        self.model = model
        self.encode = encode
        self.tokens = tokens
        self.options = options
        self.batch_cuts = batch_cuts
        self.store = store
        self.memo: dict[tuple[str, str], float] = {}
        self.pairs_scored = 0

    def __call__(self, cut_id: str, texts: Sequence[str]) -> Sequence[float]:
        self.prefetch([(cut_id, texts)])
        return [self.memo[(cut_id, t)] for t in texts]

    def score_many(self, requests: Sequence[Request]) -> list[list[float]]:
        """The scores of every request, in order."""
        self.prefetch(requests)
        return [[self.memo[(cut_id, t)] for t in texts] for cut_id, texts in requests]

    def prefetch(self, requests: Sequence[Request]) -> None:
        """Score every (cut, text) pair of ``requests`` not memoised yet, ``batch_cuts`` cuts per pass."""
        missing: dict[str, list[str]] = {}
        for cut_id, texts in requests:
            for text in texts:
                if (cut_id, text) not in self.memo:
                    missing.setdefault(cut_id, [])
                    if text not in missing[cut_id]:
                        missing[cut_id].append(text)
        if not missing:
            return
        unknown = next((c for c in missing if c not in self.by_id), None)
        if unknown is not None:
            raise KeyError(f"scorer has no cut {unknown!r}")
        if self.store is not None:
            found = self.store.get_many([(c, t) for c, texts in missing.items() for t in texts])
            self.memo.update(found)
            missing = {c: [t for t in texts if (c, t) not in found] for c, texts in missing.items()}
            missing = {c: texts for c, texts in missing.items() if texts}
        cut_ids = list(missing)
        for begin in range(0, len(cut_ids), self.batch_cuts):
            group = cut_ids[begin: begin + self.batch_cuts]
            scored = self._score_cuts({c: missing[c] for c in group})
            self.memo.update(scored)
            if self.store is not None:
                self.store.put_many(scored)

    def _score_cuts(self, texts_of: dict[str, list[str]]) -> dict[tuple[str, str], float]:
        cuts = [self.by_id[c] for c in texts_of]
        try:
            encoded = self.encode(cuts)
        except AudioError as error:  # the audio went away after decode, and no frames were stored
            cut_id, reason = next(iter(error.failures.items()), (cuts[0].id, str(error)))
            raise ChoralError(f"cut {cut_id}: the teacher scorer needs its audio ({reason}); restore the audio, "
                              "decode with --save-frames (scores then come from the stored frames) or set "
                              "propagate.scorer: false") from None
        with torch.inference_mode():
            projected = [self.model.project_encoder(frames) for frames in encoded]
        keys = [(c, t) for c, texts in texts_of.items() for t in texts]
        index = {c: i for i, c in enumerate(texts_of)}
        values = score_pairs(self.model, projected, [(index[c], self.tokens.encode(t)) for c, t in keys],
                             self.options)
        self.pairs_scored += len(keys)
        return {key: float(v) for key, v in zip(keys, values)}


def stored_or_encoded(cuts: Sequence[Cut], stored: Callable[[Cut], torch.Tensor | None],
                      features: Callable[[list[Cut]], list[np.ndarray]],
                      encode_features: Callable[[list[np.ndarray]], tuple[torch.Tensor, torch.Tensor]],
                      seconds: float = 60.0) -> list[torch.Tensor]:
    """Each cut's encoder frames: ``stored(cut)`` (the frames decode kept) when it has them, else its audio's
    features encoded in batches of at most ``seconds`` of audio (an AudioError names the failed cuts)."""
    out: list[torch.Tensor | None] = [stored(cut) for cut in cuts]
    need = [i for i, frames in enumerate(out) if frames is None]
    batch: list[int] = []
    total = 0.0
    for position, i in enumerate(need):
        batch.append(i)
        total += cuts[i].duration
        if position + 1 == len(need) or total + cuts[need[position + 1]].duration > seconds:
            encoded, lengths = encode_features(features([cuts[k] for k in batch]))
            for row, k in enumerate(batch):
                out[k] = encoded[row, : int(lengths[row])]
            batch, total = [], 0.0
    return [frames for frames in out if frames is not None]


def prefetch(scorer: Scorer | None, requests: Sequence[Request]) -> None:
    """Let ``scorer`` score ``requests`` in one batch if it can (a plain callable is asked one cut at a time later)."""
    method = getattr(scorer, "prefetch", None)
    if method is not None and requests:
        method(requests)


class TeacherScorer:
    """A :class:`~.contracts.NamedScorer` whose scorer is built by ``build()`` on the first call."""

    def __init__(self, name: str, inputs: Sequence[Path], build: Callable[[], Scorer]) -> None:
        self.name = name
        self.inputs = list(inputs)
        self._build = build
        self._scorer: Scorer | None = None

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the built scorer (a model and an open memo): a worker builds its own on first use."""
        return {**self.__dict__, "_scorer": None}

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self._build()
        return self._scorer

    def __call__(self, cut_id: str, texts: Sequence[str]) -> Sequence[float]:
        return self.scorer(cut_id, texts)

    def prefetch(self, requests: Sequence[Request]) -> None:
        prefetch(self.scorer, requests)
