"""A transducer with a stateless decoder in icefall's conventions, in torch, and its one-file checkpoint.

The parts and the names icefall's ONNX export gives them (see :mod:`.icefall_export`):

- encoder: raw log-mel fbank ``(N, T, mel)`` (what lhotse and kaldi-native-fbank
  compute, what sherpa-onnx feeds) is normalised *inside* the model, per utterance
  and mel bin over the valid frames only::

      x̂[t] = (x[t] - μ) / (σ + 1e-5),   μ, σ² = mean and variance of x[0 .. len-1]

  then two 3x3 stride-2 convolutions (4x fewer frames) and (Bi)LSTM layers, plus a
  CTC head for training. Padding never leaks in: frames past an utterance's end are
  zeroed before each convolution, so a batch encodes each utterance as it would alone
  (sherpa-onnx pads batches with log(1e-10));
- decoder (prediction network) without recurrence: the embeddings of the last
  ``context_size`` symbols, mixed by a 1-D convolution of that width (grouped, 4
  channels a group) and a ReLU. A symbol id -1 (no symbol yet) embeds to zeros, so
  the first context is ``-1 ... -1, blank``; in training the left padding does the same;
- joiner: ``output_linear(tanh(encoder_proj(e_t) + decoder_proj(d_u)))``.

Because the decoder sees only the last ``context_size`` symbols, its "state" is that
context; search keeps it as an ``(n, context_size)`` id tensor (:class:`StatelessDecodable`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...kernels.rnnt import rnnt_loss
from ..errors import ChoralError
from ..manifest import atomic_output
from ..meta import choral_version
from .bpe import SentencePieceTable
from .layers import conv_lstm_encode, ctc_term, subsampled_mel_bins
from .tokens import BLANK

STATELESS_FORMAT = "choral-stateless-transducer-1"


@dataclass(frozen=True)
class StatelessConfig:
    """Sizes of the stateless transducer."""

    num_mel_bins: int = 80
    vocab_size: int = 500
    conv_channels: int = 32
    encoder_input: int = 256
    encoder_hidden: int = 192
    encoder_layers: int = 3
    bidirectional: bool = True
    decoder_dim: int = 256
    context_size: int = 2
    joiner_dim: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.context_size < 1:
            raise ValueError("context_size must be at least 1")
        if self.decoder_dim % 4:
            raise ValueError("decoder_dim must be a multiple of 4 (the context convolution groups 4 channels)")
        if self.vocab_size < 2:
            raise ValueError("vocab_size must hold the blank and at least one symbol")


def utterance_cmvn(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance, per-bin mean and variance normalisation over the valid frames; padding set to 0."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, :, None]
    count = lengths.to(x.dtype).clamp(min=1)[:, None, None]
    mean = (x * mask).sum(dim=1, keepdim=True) / count
    centred = (x - mean) * mask
    std = ((centred * centred).sum(dim=1, keepdim=True) / count).sqrt()
    return centred / (std + 1e-5)


class FbankEncoder(nn.Module):
    """Raw fbank -> encoder frames ``(N, T', D)`` and lengths (normalisation, 4x subsampling, LSTM)."""

    def __init__(self, c: StatelessConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c.conv_channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c.conv_channels, c.conv_channels, 3, stride=2, padding=1)
        self.subsample_proj = nn.Linear(c.conv_channels * subsampled_mel_bins(c.num_mel_bins), c.encoder_input)
        self.lstm = nn.LSTM(c.encoder_input, c.encoder_hidden, num_layers=c.encoder_layers, batch_first=True,
                            bidirectional=c.bidirectional, dropout=c.dropout if c.encoder_layers > 1 else 0.0)
        self.output_dim = c.encoder_hidden * (2 if c.bidirectional else 1)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = x_lens.long()
        # in float16 the sums of the normalisation overflow (30 s of squared fbank): it runs in float32
        normalised = (utterance_cmvn(x, lengths) if x.dtype == torch.float32
                      else utterance_cmvn(x.float(), lengths).to(x.dtype))
        return conv_lstm_encode(self.conv1, self.conv2, self.subsample_proj, self.lstm, normalised, lengths)


class StatelessDecoder(nn.Module):
    """Embedding of the last ``context_size`` symbols + grouped context convolution + ReLU (icefall's decoder)."""

    def __init__(self, vocab_size: int, decoder_dim: int, context_size: int) -> None:
        super().__init__()
        self.context_size = context_size
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, decoder_dim)
        self.conv = (nn.Conv1d(decoder_dim, decoder_dim, kernel_size=context_size, groups=decoder_dim // 4,
                               bias=False) if context_size > 1 else None)

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        """Symbols ``(N, U)`` -> outputs ``(N, U, D)``; position ``u`` sees ``y[u-context+1 .. u]``.

        ``need_pad`` left-pads with "no symbol" (training: one output per position);
        without it ``U`` must be ``context_size`` and there is one output (search).
        """
        y = y.long()
        embedded = self.embedding(y.clamp(min=0))
        embedded = embedded * (y >= 0).unsqueeze(-1).to(embedded.dtype)
        if self.conv is None:
            return embedded
        x = embedded.permute(0, 2, 1)
        if need_pad:
            x = F.pad(x, (self.context_size - 1, 0))
        return torch.relu(self.conv(x)).permute(0, 2, 1)


class StatelessTransducer(nn.Module):
    """Encoder, stateless decoder, joiner and CTC head (see the module docstring)."""

    def __init__(self, config: StatelessConfig = StatelessConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = FbankEncoder(c)
        self.encoder_dim = self.encoder.output_dim
        self.ctc_head = nn.Linear(self.encoder_dim, c.vocab_size)
        self.decoder = StatelessDecoder(c.vocab_size, c.decoder_dim, c.context_size)
        self.encoder_proj = nn.Linear(self.encoder_dim, c.joiner_dim)
        self.decoder_proj = nn.Linear(c.decoder_dim, c.joiner_dim)
        self.output_linear = nn.Linear(c.joiner_dim, c.vocab_size)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw fbank ``(N, T, mel)`` -> encoder frames ``(N, T', D)`` and lengths ``(N,)``."""
        return self.encoder(features, lengths)

    def join(self, enc_projected: torch.Tensor, dec_projected: torch.Tensor) -> torch.Tensor:
        """Logits of already projected (broadcastable) encoder and decoder vectors."""
        return self.output_linear(torch.tanh(enc_projected + dec_projected))

    def decoder_outputs(self, targets: torch.Tensor) -> torch.Tensor:
        """Projected decoder outputs ``(N, U+1, J)`` after blank and each symbol of ``targets (N, U)``."""
        start = torch.full((targets.shape[0], 1), BLANK, dtype=torch.long, device=targets.device)
        return self.decoder_proj(self.decoder(torch.cat([start, targets.long()], dim=1), need_pad=True))

    def loss(self, features: torch.Tensor, feature_lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor, ctc_weight: float = 0.3) -> tuple[torch.Tensor, dict[str, float]]:
        """Transducer loss + ``ctc_weight`` x CTC loss (mean negative log-likelihood per utterance)."""
        encoded, enc_lengths = self.encode(features, feature_lengths)
        logits = self.join(self.encoder_proj(encoded)[:, :, None, :], self.decoder_outputs(targets)[:, None, :, :])
        transducer = rnnt_loss(logits.log_softmax(-1), targets, enc_lengths, target_lengths)
        total, parts = transducer, {"rnnt": float(transducer.detach())}
        if ctc_weight > 0:
            ctc = ctc_term(self.ctc_head, encoded, enc_lengths, targets, target_lengths)
            total = total + ctc_weight * ctc
            parts["ctc"] = float(ctc.detach())
        return total, parts


def start_context(n: int, context_size: int, device: torch.device | None = None) -> torch.Tensor:
    """The decoder input before any symbol: ``-1 ... -1, blank`` per hypothesis (as icefall and sherpa-onnx)."""
    context = torch.full((n, context_size), -1, dtype=torch.long, device=device)
    context[:, -1] = BLANK
    return context


class StatelessDecodable:
    """:class:`~.search.Decodable` view of a :class:`StatelessTransducer`: the state is the ``(n, context)`` ids."""

    def __init__(self, model: StatelessTransducer) -> None:
        self.model = model
        self.context_size = model.config.context_size

    def _decode(self, context: torch.Tensor) -> torch.Tensor:
        return self.model.decoder_proj(self.model.decoder(context, need_pad=False)[:, -1])

    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.model.encoder_proj(encoded)

    def start(self, n: int, device: torch.device | None = None) -> tuple[torch.Tensor, Any]:
        context = start_context(n, self.context_size, device)
        return self._decode(context), context

    def advance(self, symbols: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        context = torch.cat([state[:, 1:], symbols.long()[:, None]], dim=1)
        return self._decode(context), context

    def select(self, state: Any, index: torch.Tensor) -> Any:
        return state[index]

    def concat(self, first: Any, second: Any) -> Any:
        return torch.cat([first, second])

    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        return self.model.join(enc_projected, pred_projected)

    def predict_along(self, targets: torch.Tensor) -> torch.Tensor:
        return self.model.decoder_outputs(targets)


def save_stateless(model: StatelessTransducer, tokens: SentencePieceTable, path: str | Path) -> None:
    """One file: weights, config, the sentencepiece model's bytes, choral version (written atomically)."""
    if model.config.vocab_size != len(tokens):
        raise ChoralError(f"model vocabulary {model.config.vocab_size} != {len(tokens)} sentencepiece pieces")
    payload = {"format": STATELESS_FORMAT, "config": asdict(model.config), "bpe_model": tokens.model_bytes,
               "state_dict": model.state_dict(), "choral_version": choral_version()}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_stateless(path: str | Path) -> tuple[StatelessTransducer, SentencePieceTable]:
    """Model (eval mode) and vocabulary of a checkpoint written by :func:`save_stateless`; ChoralError if not one."""
    path = Path(path)
    if not path.is_file():
        raise ChoralError(f"{path}: teacher checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for bad files
        raise ChoralError(f"{path}: not a readable teacher checkpoint ({str(error).splitlines()[0][:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != STATELESS_FORMAT:
        raise ChoralError(f"{path}: not a choral stateless transducer checkpoint")
    tokens = SentencePieceTable.from_model(payload["bpe_model"], f"{path} (bpe_model)")
    try:
        config = StatelessConfig(**payload["config"])
    except (TypeError, ValueError) as error:
        raise ChoralError(f"{path}: bad model config ({error})") from None
    if config.vocab_size != len(tokens):
        raise ChoralError(f"{path}: model vocabulary {config.vocab_size} != {len(tokens)} sentencepiece pieces")
    model = StatelessTransducer(config)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), tokens
