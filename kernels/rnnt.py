"""RNN-T log-likelihood ``log P(y | x)`` by the forward algorithm, batched and differentiable.

The transducer lattice of an utterance with ``T`` encoder frames and ``U`` target
symbols has nodes ``(t, u)``, ``0 <= t < T``, ``0 <= u <= U``. From node ``(t, u)``
a *blank* arc (log-prob ``b[t, u]``) goes to ``(t + 1, u)`` and a *label* arc
(log-prob ``l[t, u]`` of symbol ``y[u]``) goes to ``(t, u + 1)``. The forward
variable ``α[t, u]`` is the log of the total probability of all paths from
``(0, 0)`` to ``(t, u)``::

    α[0, 0] = 0
    α[t, u] = logaddexp(α[t-1, u] + b[t-1, u],  α[t, u-1] + l[t, u-1])
    log P(y | x) = α[T-1, U] + b[T-1, U]

Vectorisation: within one time step the recurrence along ``u`` is a linear
recurrence in the log semiring, so it has a closed form. With
``c[u] = α[t-1, u] + b[t-1, u]`` (the mass arriving from the previous frame) and
``S[u] = l[t, 0] + ... + l[t, u-1]`` (the prefix sums of label log-probs)::

    α[t, u] = S[u] + logcumsumexp_u(c[u] - S[u])

since every path into ``(t, u)`` enters frame ``t`` at some ``k <= u`` and then
emits ``y[k..u-1]``. So the kernel loops over the ``T`` frames only, each step a
handful of tensor ops over ``(B, U + 1)``; autograd differentiates through it.
Precision note: ``c - S`` cancels large prefix sums, which costs about
``|S| * eps`` absolute error (negligible in float64, ~1e-4 nats for very long
targets in float32).
"""

from __future__ import annotations

from typing import Callable

import torch

# A finite stand-in for log(0): -inf would make logcumsumexp's backward produce NaN.
_LOG_ZERO = -1.0e10


def rnnt_lattice_log_probs(
    log_probs: torch.Tensor, targets: torch.Tensor, blank: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split joiner log-probs ``(B, T, U+1, V)`` into blank ``(B, T, U+1)`` and label ``(B, T, U)`` arcs.

    ``targets`` is ``(B, U)`` (padding may hold any valid symbol id); ``l[b, t, u]``
    is the log-prob of ``targets[b, u]`` at node ``(t, u)``.
    """
    blank_lp = log_probs[..., blank]
    batch, frames, nodes, _ = log_probs.shape
    index = targets.long().clamp(min=0)[:, None, :, None].expand(batch, frames, nodes - 1, 1)
    label_lp = torch.gather(log_probs[:, :, : nodes - 1, :], 3, index).squeeze(3)
    return blank_lp, label_lp


def rnnt_log_likelihood_from_arcs(
    blank_lp: torch.Tensor,
    label_lp: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """``log P(y | x)`` per utterance ``(B,)`` from per-node arc log-probs (see module docstring).

    ``blank_lp``: ``(B, T, U+1)``; ``label_lp``: ``(B, T, U)``; lengths ``(B,)`` with
    ``1 <= frame_lengths[b] <= T`` and ``0 <= target_lengths[b] <= U``. Values
    beyond an utterance's lengths are ignored (they may be anything finite or not).
    """
    batch, frames, nodes = blank_lp.shape
    if label_lp.shape != (batch, frames, nodes - 1):
        raise ValueError(f"label log-probs {tuple(label_lp.shape)} do not match "
                         f"blank log-probs {tuple(blank_lp.shape)}")
    device = blank_lp.device
    frame_lengths = frame_lengths.to(device).long()
    target_lengths = target_lengths.to(device).long()
    if frames == 0 or bool((frame_lengths < 1).any()) or bool((frame_lengths > frames).any()):
        raise ValueError("every utterance needs 1 <= frame length <= T")
    if bool((target_lengths < 0).any()) or bool((target_lengths > nodes - 1).any()):
        raise ValueError("every utterance needs 0 <= target length <= U")

    # Label arcs past an utterance's last symbol only feed nodes u > U_b: zero them so
    # padding (even -inf) cannot produce NaN; they then never touch the answer.
    u_index = torch.arange(nodes - 1, device=device)
    label_lp = torch.where(u_index[None, None, :] < target_lengths[:, None, None], label_lp,
                           torch.zeros((), dtype=label_lp.dtype, device=device))
    zero = torch.zeros(batch, frames, 1, dtype=label_lp.dtype, device=device)
    prefix = torch.cat([zero, torch.cumsum(label_lp, dim=2)], dim=2)  # S[t, u], (B, T, U+1)

    arriving = torch.full((batch, nodes), _LOG_ZERO, dtype=blank_lp.dtype, device=device)
    arriving[:, 0] = 0.0  # c at t = 0: all mass starts at (0, 0)
    # log P(y | x) = α[T_b-1, U_b] + b[T_b-1, U_b] is the mass `arriving` leaving frame T_b - 1 at u = U_b:
    # picked up when the loop passes that frame, so the alphas are never stored
    u_last = target_lengths[:, None]
    result = torch.zeros(batch, dtype=blank_lp.dtype, device=device)
    ends = set((frame_lengths - 1).tolist())
    for t in range(max(ends) + 1):  # frames past every utterance's end are never needed
        alpha = prefix[:, t] + torch.logcumsumexp(arriving - prefix[:, t], dim=1)
        arriving = alpha + blank_lp[:, t]
        if t in ends:
            result = torch.where(frame_lengths == t + 1, torch.gather(arriving, 1, u_last).squeeze(1), result)
    return result


def rnnt_log_likelihood(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """``log P(y | x)`` per utterance from normalised joiner log-probs ``(B, T, U+1, V)``."""
    blank_lp, label_lp = rnnt_lattice_log_probs(log_probs, targets, blank)
    return rnnt_log_likelihood_from_arcs(blank_lp, label_lp, frame_lengths, target_lengths)


def rnnt_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """Training loss: the negative log-likelihood averaged over the batch."""
    return -rnnt_log_likelihood(log_probs, targets, frame_lengths, target_lengths, blank).mean()


def rnnt_pruned_log_likelihood(
    arcs_at: Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    frame_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    width: int,
    lookback: int = 1,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``log P(y | x)`` per utterance ``(B,)`` over a lattice pruned to ``width`` labels per frame.

    Frame ``t`` keeps the nodes ``s_t <= u < s_t + width``. The window follows the
    best path: ``s_t = clamp(s_{t-1} + argmax_k c[k] - lookback, s_{t-1}, U)``, where
    ``c`` is the mass arriving from frame ``t - 1`` (so the window starts just below the
    most probable node and leaves ``width - lookback - 1`` labels to be emitted within the
    frame), never beyond ``max(U - width + 1, 0)`` (the window then reaches ``u = U``), never
    so low that it could not get there by the last frame (moving ``width - 1 - lookback`` a
    frame), and on the last frame exactly there. With ``width > U`` nothing is pruned. Mass on
    nodes outside the windows is dropped, so the result is a lower bound of the full
    likelihood, equal to it when every likely alignment stays inside the band (k2's
    pruned RNN-T loss restricts frames the same way, with ranges from a cheaper model).

    ``arcs_at(t, starts)`` gives the blank and label log-probs ``(B, width)`` of the
    nodes ``(t, starts[b] + k)`` (any finite value where ``starts[b] + k > U_b``), so the
    caller evaluates its joiner on ``B x width`` nodes per frame instead of ``B x (U + 1)``.
    Within a frame the closed form of :func:`rnnt_log_likelihood_from_arcs` applies.
    """
    if not 0 <= lookback <= width - 2:  # else a window whose best node is its top one could not move up
        raise ValueError("need 0 <= lookback <= width - 2")
    frame_lengths = frame_lengths.long()
    target_lengths = target_lengths.long()
    device = frame_lengths.device
    batch = frame_lengths.shape[0]
    if batch == 0:
        return torch.zeros(0, dtype=dtype, device=device)
    if bool((frame_lengths < 1).any()) or bool((target_lengths < 0).any()):
        raise ValueError("every utterance needs frame length >= 1 and target length >= 0")
    offsets = torch.arange(width, device=device)
    starts = torch.zeros(batch, dtype=torch.long, device=device)
    arriving = torch.full((batch, width), _LOG_ZERO, dtype=dtype, device=device)
    arriving[:, 0] = 0.0
    result = torch.full((batch,), _LOG_ZERO, dtype=dtype, device=device)
    last = frame_lengths - 1
    lowest_final = (target_lengths - width + 1).clamp(min=0)
    stride = width - 1 - lookback
    for t in range(int(frame_lengths.max())):
        moved = starts
        if t > 0:
            moved = torch.maximum(starts + arriving.argmax(dim=1) - lookback, starts)
            # never so far behind that the last frame's window is out of reach (it moves at most `stride` a frame)
            moved = torch.maximum(moved, lowest_final - (last - t) * stride)
        # a window that already reaches u = U never moves on (that would only drop mass); the last frame's must
        moved = torch.where(last == t, lowest_final, torch.minimum(moved, lowest_final))
        if bool((moved != starts).any()):
            index = offsets[None, :] + (moved - starts)[:, None]
            arriving = torch.where(index < width, torch.gather(arriving, 1, index.clamp(max=width - 1)),
                                   torch.full((), _LOG_ZERO, dtype=dtype, device=device))
        starts = moved
        blank_lp, label_lp = arcs_at(t, starts)
        nodes = starts[:, None] + offsets[None, :]
        label_lp = torch.where(nodes < target_lengths[:, None], label_lp.to(dtype),
                               torch.zeros((), dtype=dtype, device=device))
        prefix = torch.cat([torch.zeros(batch, 1, dtype=dtype, device=device),
                            torch.cumsum(label_lp[:, :-1], dim=1)], dim=1)
        alpha = prefix + torch.logcumsumexp(arriving - prefix, dim=1)
        arriving = alpha + blank_lp.to(dtype)
        arriving = torch.where(nodes <= target_lengths[:, None], arriving,
                               torch.full((), _LOG_ZERO, dtype=dtype, device=device))
        ending = last == t
        if bool(ending.any()):
            k = (target_lengths - starts).clamp(min=0, max=width - 1)
            final = torch.gather(arriving, 1, k[:, None]).squeeze(1)
            result = torch.where(ending, final, result)
    return result
