"""What choral's two torch transducers share: the subsampling + LSTM encoder pass and the CTC term.

Both models (the character :class:`~.model.Transducer` and the icefall-style
:class:`~.stateless.StatelessTransducer`) keep their own parameter names (their
checkpoints and ONNX exports depend on them); the computation is written once here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tokens import BLANK


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames left after two stride-2 convolutions with padding 1: ceil(ceil(T / 2) / 2)."""
    return ((lengths - 1) // 2 + 1 - 1) // 2 + 1


def subsampled_mel_bins(num_mel_bins: int) -> int:
    """Mel bins left after the same two convolutions."""
    return (((num_mel_bins - 1) // 2 + 1) - 1) // 2 + 1


def conv_lstm_encode(conv1: nn.Conv2d, conv2: nn.Conv2d, proj: nn.Linear, lstm: nn.LSTM, features: torch.Tensor,
                     lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, mel)`` features -> encoder frames ``(B, T', D)`` and their lengths ``(B,)``.

    Two 3x3 stride-2 convolutions with ReLU (4x fewer frames), a linear projection of
    the flattened (channel, mel) axes, then the (Bi)LSTM over the valid frames only.
    Frames past each utterance's end are zeroed between the convolutions, as a lone
    utterance's padding would be, so an utterance encodes the same alone or in a batch.
    """
    lengths = lengths.long()
    x = torch.relu(conv1(features.unsqueeze(1)))  # (B, C, T/2, mel/2)
    half = (lengths - 1) // 2 + 1
    x = x * (torch.arange(x.shape[2], device=x.device)[None, :] < half[:, None])[:, None, :, None]
    x = torch.relu(conv2(x))  # (B, C, T', mel')
    x = proj(x.permute(0, 2, 1, 3).flatten(2))  # (B, T', encoder_input)
    out_lengths = subsampled_lengths(lengths).clamp(max=x.shape[1])
    packed = nn.utils.rnn.pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
    encoded, _ = lstm(packed)
    encoded, _ = nn.utils.rnn.pad_packed_sequence(encoded, batch_first=True, total_length=x.shape[1])
    return encoded, out_lengths


def ctc_term(ctc_head: nn.Linear, encoded: torch.Tensor, encoded_lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """CTC loss of the encoder frames (mean negative log-likelihood per utterance; blank is :data:`BLANK`)."""
    log_probs = ctc_head(encoded).log_softmax(-1).transpose(0, 1)  # (T', B, V)
    return F.ctc_loss(log_probs, targets, encoded_lengths, target_lengths, blank=BLANK, reduction="sum",
                      zero_infinity=True) / targets.shape[0]
