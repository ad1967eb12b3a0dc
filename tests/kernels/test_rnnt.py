import math

import pytest
import torch

from choral.kernels.rnnt import (
    rnnt_lattice_log_probs,
    rnnt_log_likelihood,
    rnnt_log_likelihood_from_arcs,
    rnnt_loss,
    rnnt_pruned_log_likelihood,
)


def naive_log_likelihood(log_probs: torch.Tensor, targets: list[int], frames: int, blank: int = 0) -> float:
    """Cell-by-cell forward algorithm in plain Python floats (the reference)."""
    lp = log_probs.double().tolist()
    n = len(targets)
    alpha = [[-math.inf] * (n + 1) for _ in range(frames)]
    for t in range(frames):
        for u in range(n + 1):
            if t == 0 and u == 0:
                alpha[t][u] = 0.0
                continue
            terms = []
            if t > 0:
                terms.append(alpha[t - 1][u] + lp[t - 1][u][blank])
            if u > 0:
                terms.append(alpha[t][u - 1] + lp[t][u - 1][targets[u - 1]])
            top = max(terms)
            alpha[t][u] = top + math.log(sum(math.exp(x - top) for x in terms)) if top > -math.inf else -math.inf
    return alpha[frames - 1][n] + lp[frames - 1][n][blank]


def random_lattice(batch: int, frames: int, symbols: int, vocab: int, dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, symbols + 1, vocab, generator=generator, dtype=dtype) * 2
    targets = torch.randint(1, vocab, (batch, symbols), generator=generator)
    return logits.log_softmax(-1), targets


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_matches_naive_with_unequal_lengths(dtype, tol) -> None:
    log_probs, targets = random_lattice(4, 9, 5, 7, dtype=dtype)
    frame_lengths = torch.tensor([9, 4, 1, 7])
    target_lengths = torch.tensor([5, 2, 3, 0])
    got = rnnt_log_likelihood(log_probs, targets, frame_lengths, target_lengths)
    for b in range(4):
        t_b, u_b = int(frame_lengths[b]), int(target_lengths[b])
        expected = naive_log_likelihood(log_probs[b, :t_b, : u_b + 1], targets[b, :u_b].tolist(), t_b)
        assert abs(got[b].item() - expected) < tol


def test_padding_is_ignored_even_if_minus_inf() -> None:
    log_probs, targets = random_lattice(2, 6, 4, 5)
    lengths_t, lengths_u = torch.tensor([6, 3]), torch.tensor([4, 2])
    clean = rnnt_log_likelihood(log_probs, targets, lengths_t, lengths_u)
    dirty = log_probs.clone()
    dirty[1, 3:] = -math.inf
    dirty[1, :, 3:] = -math.inf
    assert torch.allclose(rnnt_log_likelihood(dirty, targets, lengths_t, lengths_u), clean)


def test_sums_to_one_over_all_sequences() -> None:
    """With V=2 (blank + one symbol) the outputs are 1^u, u = 0, 1, ...; their probabilities sum to ~1."""
    logits = torch.randn(1, 2, 7, 2, dtype=torch.float64)
    logits[..., 1] -= 3.0  # make long label runs unlikely so truncating at 5 symbols loses little
    log_probs = logits.log_softmax(-1)
    total = 0.0
    for u in range(6):
        total += rnnt_log_likelihood(log_probs[:, :, : u + 1], torch.ones(1, u, dtype=torch.long),
                                     torch.tensor([2]), torch.tensor([u])).exp().item()
    assert 0.9 < total <= 1.0 + 1e-9


def test_arcs_api_matches_full_api() -> None:
    log_probs, targets = random_lattice(3, 5, 3, 6)
    blank_lp, label_lp = rnnt_lattice_log_probs(log_probs, targets)
    lengths = torch.tensor([5, 5, 2]), torch.tensor([3, 1, 2])
    assert torch.allclose(rnnt_log_likelihood_from_arcs(blank_lp, label_lp, *lengths),
                          rnnt_log_likelihood(log_probs, targets, *lengths))


def test_gradcheck_float64() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.tensor([[1, 3], [2, 2]])
    frame_lengths, target_lengths = torch.tensor([4, 3]), torch.tensor([2, 1])

    def function(x: torch.Tensor) -> torch.Tensor:
        return rnnt_log_likelihood(x.log_softmax(-1), targets, frame_lengths, target_lengths)

    assert torch.autograd.gradcheck(function, (logits,), eps=1e-6, atol=1e-6)


def test_loss_is_negative_mean_and_backprops() -> None:
    log_probs, targets = random_lattice(3, 6, 2, 5, dtype=torch.float32)
    logits = log_probs.clone().requires_grad_(True)
    lengths = torch.tensor([6, 5, 4]), torch.tensor([2, 2, 1])
    loss = rnnt_loss(logits.log_softmax(-1), targets, *lengths)
    expected = -rnnt_log_likelihood(log_probs, targets, *lengths).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_rejects_bad_lengths() -> None:
    log_probs, targets = random_lattice(1, 3, 2, 4)
    with pytest.raises(ValueError):
        rnnt_log_likelihood(log_probs, targets, torch.tensor([4]), torch.tensor([2]))
    with pytest.raises(ValueError):
        rnnt_log_likelihood(log_probs, targets, torch.tensor([3]), torch.tensor([3]))


def _arcs_of(log_probs: torch.Tensor, targets: torch.Tensor):
    """``arcs_at`` for rnnt_pruned_log_likelihood over a full log-prob tensor ``(B, T, U+1, V)``."""
    blank_lp, label_lp = rnnt_lattice_log_probs(log_probs, targets)
    nodes_max = blank_lp.shape[2] - 1

    def arcs_at(t, starts):
        nodes = (starts[:, None] + torch.arange(width_of[0])[None, :]).clamp(max=nodes_max)
        blank = torch.gather(blank_lp[:, t], 1, nodes)
        label = torch.gather(label_lp[:, t], 1, nodes.clamp(max=max(nodes_max - 1, 0)))
        return blank, label

    width_of = [0]
    return arcs_at, width_of


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pruned_lattice_wide_enough_is_the_full_lattice(dtype) -> None:
    log_probs, targets = random_lattice(4, 9, 5, 7, dtype=dtype)
    frame_lengths, target_lengths = torch.tensor([9, 4, 1, 7]), torch.tensor([5, 2, 3, 0])
    full = rnnt_log_likelihood(log_probs, targets, frame_lengths, target_lengths)
    arcs_at, width_of = _arcs_of(log_probs, targets)
    width_of[0] = 6
    pruned = rnnt_pruned_log_likelihood(arcs_at, frame_lengths, target_lengths, 6, dtype=dtype)
    assert torch.allclose(pruned, full, atol=1e-5 if dtype == torch.float32 else 1e-10)


def test_pruned_lattice_is_a_lower_bound_that_tightens_with_width() -> None:
    log_probs, targets = random_lattice(3, 30, 12, 9, seed=3)
    frame_lengths, target_lengths = torch.tensor([30, 25, 18]), torch.tensor([12, 9, 12])
    full = rnnt_log_likelihood(log_probs, targets, frame_lengths, target_lengths)
    arcs_at, width_of = _arcs_of(log_probs, targets)
    previous = None
    for width in (3, 4, 8, 13):
        width_of[0] = width
        pruned = rnnt_pruned_log_likelihood(arcs_at, frame_lengths, target_lengths, width, dtype=torch.float64)
        assert bool((pruned <= full + 1e-9).all())
        assert bool((pruned > -1e9).all())  # the window always reaches the last label
        previous = pruned
    assert torch.allclose(previous, full)


def test_pruned_lattice_follows_a_peaked_alignment() -> None:
    # one dominant path: a label every third frame; a 3-wide band around it loses almost nothing
    frames, symbols, vocab = 30, 9, 6
    logits = torch.full((1, frames, symbols + 1, vocab), -8.0, dtype=torch.float64)
    targets = torch.randint(1, vocab, (1, symbols), generator=torch.Generator().manual_seed(0))
    for t in range(frames):
        for u in range(symbols + 1):
            if u < symbols and t == 3 * u + 1:
                logits[0, t, u, targets[0, u]] = 8.0
            else:
                logits[0, t, u, 0] = 8.0
    log_probs = logits.log_softmax(-1)
    lengths_t, lengths_u = torch.tensor([frames]), torch.tensor([symbols])
    full = rnnt_log_likelihood(log_probs, targets, lengths_t, lengths_u)
    arcs_at, width_of = _arcs_of(log_probs, targets)
    width_of[0] = 3
    pruned = rnnt_pruned_log_likelihood(arcs_at, lengths_t, lengths_u, 3, dtype=torch.float64)
    assert abs(float(pruned - full)) < 1e-3


def test_pruned_lattice_rejects_bad_widths() -> None:
    with pytest.raises(ValueError):
        rnnt_pruned_log_likelihood(lambda t, s: (s, s), torch.tensor([3]), torch.tensor([1]), 3, lookback=2)
