"""Decoding a transducer: greedy search, batched modified beam search, and text scoring.

Both searches emit at most one symbol per encoder frame ("modified" beam search):
at each frame every hypothesis either takes blank (keeps its symbols) or one
label (appends it) and then the blank that leaves the frame, so a score is the
log-probability of one path of the standard RNN-T lattice. In beam
search, hypotheses with the same symbol sequence are merged by ``logaddexp`` of
their scores: they are different alignments of the same output, so their
probabilities add. The prediction network depends only on the symbols, so merged
hypotheses share one predictor state.

Batching: the hypotheses of all utterances are kept in one flat tensor, so each
frame costs one joiner call and one predictor call (for the hypotheses that
emitted a label) for the whole batch, instead of one per utterance.

Backends: beam search and scoring see the model through :class:`Decodable`
(projected encoder and predictor vectors, an opaque predictor state per
hypothesis, the joiner), so choral's torch :class:`Transducer` (adapted by
:class:`TorchDecodable`), the stateless transducer (:class:`~.stateless.StatelessDecodable`) and
exported ONNX models run the same searches. Greedy search uses the same interface.
:func:`length_normalized_best` picks from a final beam as sherpa-onnx does.

:func:`score_texts` gives the full RNN-T log-likelihood of arbitrary texts (all
alignments, any number of symbols per frame) with the forward-algorithm kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from ...kernels.rnnt import rnnt_log_likelihood
from .model import Transducer
from .tokens import BLANK, TokenTable

# Bound on N x T x (U+1) x joiner_dim elements of one score_texts chunk (about 128 MB in float32).
_SCORE_CHUNK_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class Hypothesis:
    """A symbol sequence and its log-probability."""

    tokens: tuple[int, ...]
    score: float


class Decodable(Protocol):
    """What beam search and scoring need from a transducer, whatever runs it.

    Vectors are in the joiner's space (already projected); a predictor state
    describes ``n`` hypotheses and is only handled through ``select``/``concat``,
    so it may be LSTM ``(h, c)`` or the last symbols of a stateless predictor.
    """

    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor:
        """Encoder frames ``(..., D)`` -> joiner inputs ``(..., J)``."""

    def start(self, n: int, device: torch.device) -> tuple[torch.Tensor, Any]:
        """Predictor outputs ``(n, J)`` and state after the start symbol (blank)."""

    def advance(self, symbols: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Predictor outputs ``(m, J)`` and state after one more symbol ``(m,)`` per hypothesis."""

    def select(self, state: Any, index: torch.Tensor) -> Any:
        """The states of hypotheses ``index`` (in that order)."""

    def concat(self, first: Any, second: Any) -> Any:
        """The states of ``first``'s hypotheses followed by ``second``'s."""

    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        """Joiner logits ``(..., V)`` of broadcastable projected vectors."""

    def predict_along(self, targets: torch.Tensor) -> torch.Tensor:
        """Predictor outputs ``(n, U+1, J)`` after the start symbol and each of ``targets (n, U)``."""


class TorchDecodable:
    """:class:`Decodable` view of choral's torch :class:`Transducer` (LSTM state ``(h, c)``, hypotheses on dim 1)."""

    def __init__(self, model: Transducer) -> None:
        self.model = model

    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.model.enc_proj(encoded)

    def start(self, n: int, device: torch.device) -> tuple[torch.Tensor, Any]:
        pred, state = self.model.initial_prediction(n, device)
        return self.model.pred_proj(pred), state

    def advance(self, symbols: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out, state = self.model.predict(symbols[:, None], (state[0].contiguous(), state[1].contiguous()))
        return self.model.pred_proj(out[:, 0]), state

    def select(self, state: Any, index: torch.Tensor) -> Any:
        return state[0][:, index], state[1][:, index]

    def concat(self, first: Any, second: Any) -> Any:
        return torch.cat([first[0], second[0]], dim=1), torch.cat([first[1], second[1]], dim=1)

    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        return self.model.join(enc_projected, pred_projected)

    def predict_along(self, targets: torch.Tensor) -> torch.Tensor:
        # one LSTM call over whole sequences instead of a step per symbol
        start = torch.full((targets.shape[0], 1), BLANK, dtype=torch.long, device=targets.device)
        predicted, _ = self.model.predict(torch.cat([start, targets], dim=1))
        return self.model.pred_proj(predicted)


def decodable(model: "Transducer | Decodable") -> Decodable:
    """``model`` as a :class:`Decodable` (a torch :class:`Transducer` gets the adapter)."""
    return TorchDecodable(model) if isinstance(model, Transducer) else model


@torch.inference_mode()
def greedy_search(model: "Transducer | Decodable", encoded: torch.Tensor, lengths: torch.Tensor
                  ) -> list[Hypothesis]:
    """The most likely symbol (or blank) at each frame, for a batch ``(B, T, D)`` of encoder frames (before
    ``model.project_encoder``); at most one symbol per frame, as icefall's and sherpa-onnx's greedy search.

    The score is the sum of the chosen log-probabilities (blanks included).
    """
    batch, frames, _ = encoded.shape
    device = encoded.device
    model = decodable(model)
    enc_p = model.project_encoder(encoded)
    pred_p, state = model.start(batch, device)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    scores = torch.zeros(batch, dtype=torch.float64)
    lengths = lengths.to(device)
    for t in range(frames):
        active = lengths > t
        log_probs = model.join(enc_p[:, t], pred_p).float().log_softmax(-1)
        best_lp, best = log_probs.max(-1)
        scores += torch.where(active, best_lp, torch.zeros_like(best_lp)).double().cpu()
        emit = (active & (best != BLANK)).nonzero().squeeze(1)
        if emit.numel() == 0:
            continue
        new_p, new_state = model.advance(best[emit], model.select(state, emit))
        # the emitters' new state replaces their old one: pick row i from the old states or the new ones
        take = torch.arange(batch, device=device)
        take[emit] = batch + torch.arange(emit.numel(), device=device)
        state = model.select(model.concat(state, new_state), take)
        pred_p = torch.cat([pred_p, new_p])[take]
        for i, symbol in zip(emit.tolist(), best[emit].tolist()):
            tokens[i].append(symbol)
    return [Hypothesis(tuple(tok), float(s)) for tok, s in zip(tokens, scores.tolist())]


def length_normalized_best(hyps: Sequence[Hypothesis], context_size: int) -> Hypothesis:
    """The hypothesis sherpa-onnx's ``modified_beam_search`` returns from the same final beam: the highest
    search score per symbol, where its symbol count includes the ``context_size`` start symbols."""
    if not hyps:
        raise ValueError("no hypotheses")
    return max(hyps, key=lambda hyp: hyp.score / (len(hyp.tokens) + context_size))


@dataclass
class _Beams:
    """All utterances' hypotheses in one flat store, grouped by utterance in order."""

    utt: list[int]
    seqs: list[tuple[int, ...]]
    scores: list[float]
    pred_p: torch.Tensor          # (N, J) projected predictor output after each hypothesis' symbols
    state: Any                    # predictor state of the N hypotheses (see Decodable)


def _top_candidates(model: Decodable, beams: _Beams, enc_p_t: torch.Tensor, active: list[bool], beam: int,
                    temperature: float = 1.0) -> dict[int, list[tuple[float, int, int]]]:
    """For each active utterance, its ``beam`` best ``(score, parent, symbol)`` one-frame extensions."""
    a_pos = [p for p, u in enumerate(beams.utt) if active[u]]
    device = enc_p_t.device
    a_idx = torch.tensor(a_pos, device=device)
    a_utt = [beams.utt[p] for p in a_pos]
    logits = model.join(enc_p_t[torch.tensor(a_utt, device=device)], beams.pred_p[a_idx])
    log_probs = (logits / temperature if temperature != 1.0 else logits).float().log_softmax(-1)
    cand = torch.tensor([beams.scores[p] for p in a_pos], dtype=torch.float64, device=device)[:, None] \
        + log_probs.double()
    # Pad to (utterances, hypotheses, V) so one topk serves every utterance.
    order = sorted(set(a_utt))
    row_of = {u: r for r, u in enumerate(order)}
    first: dict[int, int] = {}
    for i, u in enumerate(a_utt):
        first.setdefault(u, i)
    rows = torch.tensor([row_of[u] for u in a_utt], device=device)
    cols = torch.tensor([i - first[u] for i, u in enumerate(a_utt)], device=device)
    vocab = log_probs.shape[1]
    padded = torch.full((len(order), int(cols.max()) + 1, vocab), -torch.inf, dtype=torch.float64, device=device)
    padded[rows, cols] = cand
    top_scores, top_index = padded.flatten(1).topk(min(beam, padded.shape[1] * vocab), dim=1)
    out: dict[int, list[tuple[float, int, int]]] = {}
    for u, scores, indices in zip(order, top_scores.tolist(), top_index.tolist()):
        out[u] = [(s, a_pos[first[u] + flat // vocab], flat % vocab)
                  for s, flat in zip(scores, indices) if s != -np.inf]
    return out


@torch.inference_mode()
def modified_beam_search(model: Transducer | Decodable, encoded: torch.Tensor, lengths: torch.Tensor,
                         beam: int = 8, temperature: float = 1.0) -> list[list[Hypothesis]]:
    """Beam search over a batch; for each utterance up to ``beam`` distinct hypotheses, best first.

    At most one symbol per frame, and a label moves straight on to the next frame
    (icefall's "modified" search): the blank that the full lattice charges after a
    label is not paid. Charging it makes the search prefer short hypotheses whenever
    the model emits several characters per frame (a trained character model does:
    the correct text scored -0.07 while the charged search returned garbage at -85).
    Search scores are therefore a ranking heuristic; the teacher rescores the
    n-best exactly with :func:`score_texts`. ``encoded`` are encoder frames before
    ``model.project_encoder``.

    ``temperature`` > 1 flattens the joiner's distribution during the search only (as
    icefall's ``temperature`` option does), so the beam keeps more diverse hypotheses;
    the exact rescoring of the n-best is unaffected.
    """
    if beam < 1:
        raise ValueError("beam must be at least 1")
    batch, frames, _ = encoded.shape
    device = encoded.device
    model = decodable(model)
    enc_p = model.project_encoder(encoded)
    pred_p, state = model.start(batch, device)
    beams = _Beams(list(range(batch)), [() for _ in range(batch)], [0.0] * batch, pred_p, state)
    lengths_list = [int(x) for x in lengths.tolist()]

    for t in range(frames):
        active = [n > t for n in lengths_list]
        if not any(active):
            break
        top = _top_candidates(model, beams, enc_p[:, t], active, beam, temperature)
        # Run the predictor once for all label extensions.
        flat = [(u, *c) for u in sorted(top) for c in top[u]]
        labels = [i for i, (_, _, _, symbol) in enumerate(flat) if symbol != BLANK]
        n_old = len(beams.utt)
        pred_all, state_all = beams.pred_p, beams.state
        extra = {}
        if labels:
            parents = torch.tensor([flat[i][2] for i in labels], device=device)
            symbols = torch.tensor([flat[i][3] for i in labels], device=device)
            new_pp, new_state = model.advance(symbols, model.select(beams.state, parents))
            pred_all = torch.cat([pred_all, new_pp])
            state_all = model.concat(state_all, new_state)
            extra = {i: n_old + j for j, i in enumerate(labels)}

        utt, seqs, scores, source = [], [], [], []
        by_utt: dict[int, list[int]] = {}
        for p, u in enumerate(beams.utt):
            by_utt.setdefault(u, []).append(p)
        index = 0
        for u in range(batch):
            if not active[u]:  # finished: carry its hypotheses over unchanged
                for p in by_utt[u]:
                    utt.append(u)
                    seqs.append(beams.seqs[p])
                    scores.append(beams.scores[p])
                    source.append(p)
                continue
            merged: dict[tuple[int, ...], int] = {}
            for score, parent, symbol in top[u]:
                if symbol == BLANK:
                    seq, store = beams.seqs[parent], parent
                else:
                    store = extra[index]
                    seq = beams.seqs[parent] + (symbol,)
                index += 1
                if seq in merged:  # another alignment of the same symbols: probabilities add
                    j = merged[seq]
                    scores[j] = float(np.logaddexp(scores[j], score))
                    continue
                merged[seq] = len(seqs)
                utt.append(u)
                seqs.append(seq)
                scores.append(score)
                source.append(store)
        src = torch.tensor(source, device=device)
        beams = _Beams(utt, seqs, scores, pred_all[src], model.select(state_all, src))

    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for u, seq, score in zip(beams.utt, beams.seqs, beams.scores):
        results[u].append(Hypothesis(seq, score))
    return [sorted(r, key=lambda hyp: -hyp.score) for r in results]


@torch.inference_mode()
def score_texts(model: Transducer | Decodable, encoded: torch.Tensor,
                token_lists: Sequence[Sequence[int]]) -> list[float]:
    """RNN-T log-likelihood ``log P(y | x)`` of each token sequence given one utterance's frames ``(T', D)``
    (before ``model.project_encoder``)."""
    if not token_lists:
        return []
    model = decodable(model)
    enc_p = model.project_encoder(encoded)  # (T', J)
    frames, joiner_dim = enc_p.shape
    longest = max(len(tokens) for tokens in token_lists)
    per_text = frames * (longest + 1) * joiner_dim
    chunk = max(1, _SCORE_CHUNK_ELEMENTS // max(per_text, 1))
    out: list[float] = []
    for begin in range(0, len(token_lists), chunk):
        group = token_lists[begin: begin + chunk]
        n, width = len(group), max(len(tokens) for tokens in group)
        targets = torch.zeros(n, width, dtype=torch.long, device=encoded.device)
        for i, tokens in enumerate(group):
            targets[i, : len(tokens)] = torch.tensor(list(tokens), dtype=torch.long)
        pred_p = model.predict_along(targets)  # (n, U+1, J)
        log_probs = model.join(enc_p[None, :, None, :], pred_p[:, None, :, :]).float().log_softmax(-1)
        target_lengths = torch.tensor([len(tokens) for tokens in group])
        frame_lengths = torch.full((n,), frames, dtype=torch.long)
        out.extend(rnnt_log_likelihood(log_probs.double(), targets, frame_lengths, target_lengths).tolist())
    return out


def nbest_texts(hyps: Sequence[Hypothesis], tokens: TokenTable, nbest: int) -> list[tuple[str, list[int], float]]:
    """Distinct texts ``(text, tokens, score)``, best first, at most ``nbest``; token sequences that read
    the same (e.g. doubled spaces) add up."""
    by_text: dict[str, tuple[list[int], float]] = {}
    for hyp in hyps:
        text = tokens.decode(hyp.tokens)
        if text in by_text:
            kept, score = by_text[text]
            by_text[text] = (kept, float(np.logaddexp(score, hyp.score)))
        else:
            by_text[text] = (list(hyp.tokens), hyp.score)
    ranked = sorted(by_text.items(), key=lambda item: -item[1][1])
    return [(text, kept, score) for text, (kept, score) in ranked[:nbest]]
