"""A small character transducer (RNN-T) in torch, and its one-file checkpoint.

- subsampling: two 3x3 stride-2 convolutions over (time, mel) reduce the frame
  rate 4x (100 -> 25 frames/s), so the T x U lattice is 4x smaller;
- encoder: (Bi)LSTM layers over the subsampled frames, plus an auxiliary CTC head
  (a linear layer to the vocabulary); CTC's frame-wise alignment pressure helps the
  transducer converge (0.3 x CTC loss was essential in our experiments);
- prediction network: embedding + LSTM over the previous symbols (blank is the
  start symbol), a language model over characters;
- joiner: ``out(tanh(enc_proj(e_t) + pred_proj(p_u)))`` gives logits for node ``(t, u)``.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ...kernels.rnnt import rnnt_loss
from ..config import coerce
from ..errors import ChoralError
from ..meta import choral_version
from .layers import conv_lstm_encode, ctc_term, subsampled_mel_bins
from .tokens import BLANK, TokenTable

CHECKPOINT_FORMAT = "choral-transducer-1"


@dataclass(frozen=True)
class TransducerConfig:
    """Sizes of the teacher; the defaults give about 3M parameters."""

    num_mel_bins: int = 80
    vocab_size: int = 29
    conv_channels: int = 32
    encoder_input: int = 256
    encoder_hidden: int = 192
    encoder_layers: int = 3
    bidirectional: bool = True
    embedding_dim: int = 128
    predictor_hidden: int = 256
    predictor_layers: int = 1
    joiner_dim: int = 256
    dropout: float = 0.1


class Transducer(nn.Module):
    """Encoder, prediction network, joiner and CTC head (see module docstring)."""

    def __init__(self, config: TransducerConfig = TransducerConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        self.conv1 = nn.Conv2d(1, c.conv_channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c.conv_channels, c.conv_channels, 3, stride=2, padding=1)
        self.subsample_proj = nn.Linear(c.conv_channels * subsampled_mel_bins(c.num_mel_bins), c.encoder_input)
        self.encoder = nn.LSTM(c.encoder_input, c.encoder_hidden, num_layers=c.encoder_layers, batch_first=True,
                               bidirectional=c.bidirectional, dropout=c.dropout if c.encoder_layers > 1 else 0.0)
        self.encoder_dim = c.encoder_hidden * (2 if c.bidirectional else 1)
        self.ctc_head = nn.Linear(self.encoder_dim, c.vocab_size)
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim)
        self.predictor = nn.LSTM(c.embedding_dim, c.predictor_hidden, num_layers=c.predictor_layers, batch_first=True)
        self.enc_proj = nn.Linear(self.encoder_dim, c.joiner_dim)
        self.pred_proj = nn.Linear(c.predictor_hidden, c.joiner_dim)
        self.joiner_out = nn.Linear(c.joiner_dim, c.vocab_size)

    # --- encoder -------------------------------------------------------------------------
    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, mel)`` features -> encoder frames ``(B, T', D)`` and their lengths ``(B,)``."""
        return conv_lstm_encode(self.conv1, self.conv2, self.subsample_proj, self.encoder, features, lengths)

    # --- prediction network --------------------------------------------------------------
    def predict(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Symbols ``(N, L)`` -> predictor outputs ``(N, L, H)`` and the LSTM state after them."""
        out, state = self.predictor(self.embedding(tokens), state)
        return out, state

    def initial_prediction(self, n: int, device: torch.device | None = None
                           ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Predictor output and state after the start symbol (blank), for ``n`` hypotheses."""
        start = torch.full((n, 1), BLANK, dtype=torch.long, device=device)
        out, state = self.predict(start)
        return out[:, 0], state

    # --- joiner --------------------------------------------------------------------------
    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        """Logits from already projected encoder and predictor vectors (broadcasting)."""
        return self.joiner_out(torch.tanh(enc_projected + pred_projected))

    def lattice_log_probs(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Normalised log-probs ``(B, T, U+1, V)`` of every lattice node."""
        logits = self.join(self.enc_proj(encoded)[:, :, None, :], self.pred_proj(predicted)[:, None, :, :])
        return logits.log_softmax(-1)

    # --- training ------------------------------------------------------------------------
    def loss(self, features: torch.Tensor, feature_lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor, ctc_weight: float = 0.3) -> tuple[torch.Tensor, dict[str, float]]:
        """Transducer loss + ``ctc_weight`` x CTC loss (both mean negative log-likelihood per utterance)."""
        encoded, enc_lengths = self.encode(features, feature_lengths)
        start = torch.full((targets.shape[0], 1), BLANK, dtype=torch.long, device=targets.device)
        predicted, _ = self.predict(torch.cat([start, targets], dim=1))
        transducer = rnnt_loss(self.lattice_log_probs(encoded, predicted), targets, enc_lengths, target_lengths)
        total = transducer
        parts = {"rnnt": float(transducer.detach())}
        if ctc_weight > 0:
            ctc = ctc_term(self.ctc_head, encoded, enc_lengths, targets, target_lengths)
            total = total + ctc_weight * ctc
            parts["ctc"] = float(ctc.detach())
        return total, parts


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: Transducer, tokens: TokenTable, path: str | Path) -> None:
    """One file: weights, config, token table, choral version (written atomically)."""
    from ..manifest import atomic_output

    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(model.config),
        "tokens": tokens.to_list(),
        "state_dict": model.state_dict(),
        "choral_version": choral_version(),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def _checked_tokens(path: Path, raw: object) -> TokenTable:
    """The checkpoint's token table: a list of distinct strings starting with the blank."""
    if not isinstance(raw, (list, tuple)) or not raw or not all(isinstance(t, str) for t in raw):
        raise ChoralError(f"{path}: bad token table (expected a non-empty list of strings)")
    if len(set(raw)) != len(raw):
        duplicate = next(t for t in raw if list(raw).count(t) > 1)
        raise ChoralError(f"{path}: bad token table (symbol {duplicate!r} appears twice)")
    try:
        return TokenTable.from_list(raw)
    except ValueError as error:
        raise ChoralError(f"{path}: bad token table ({error})") from None


def _checked_config(path: Path, raw: object) -> TransducerConfig:
    """The checkpoint's model config: only TransducerConfig keys, each of its type, sizes positive."""
    if not isinstance(raw, dict):
        raise ChoralError(f"{path}: bad model config (expected a mapping, found {type(raw).__name__})")
    hints = typing.get_type_hints(TransducerConfig)
    unknown = sorted(str(k) for k in raw if k not in hints)
    if unknown:
        raise ChoralError(f"{path}: unknown model config key {unknown[0]!r} (known: {', '.join(hints)})")
    values = {}
    for key, value in raw.items():
        try:
            values[key] = coerce(value, hints[key])
        except TypeError:
            raise ChoralError(f"{path}: model config key {key!r} must be {hints[key].__name__}, "
                              f"not {value!r}") from None
        if hints[key] is int and values[key] < 1:
            raise ChoralError(f"{path}: model config key {key!r} must be positive, not {value!r}")
    config = TransducerConfig(**values)
    if not 0.0 <= config.dropout < 1.0:
        raise ChoralError(f"{path}: model config key 'dropout' must be in [0, 1), not {config.dropout}")
    return config


def _load_weights(path: Path, model: Transducer, state: object) -> None:
    """Load ``state`` into ``model``; a ChoralError naming the first missing, unexpected or misshapen tensor."""
    if not isinstance(state, dict):
        raise ChoralError(f"{path}: bad weights (expected a state dict, found {type(state).__name__})")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        # torch lists every problem on its own line after a header; the first one says enough
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
        raise ChoralError(f"{path}: weights do not fit the model config ({detail})") from None


def load_checkpoint(path: str | Path) -> tuple[Transducer, TokenTable]:
    """Model (in eval mode) and token table of a checkpoint; a one-line ChoralError naming the checkpoint
    and the problem if it is not one: unreadable, another format, a missing part, an unknown or mistyped
    config key, a bad token table, or weights of another shape."""
    path = Path(path)
    if not path.is_file():
        raise ChoralError(f"{path}: teacher checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for bad files
        text = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ChoralError(f"{path}: not a readable teacher checkpoint ({text})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ChoralError(f"{path}: not a choral transducer checkpoint")
    missing = [key for key in ("config", "tokens", "state_dict") if key not in payload]
    if missing:
        raise ChoralError(f"{path}: incomplete teacher checkpoint (no {', '.join(missing)})")
    tokens = _checked_tokens(path, payload["tokens"])
    config = _checked_config(path, payload["config"])
    if config.vocab_size != len(tokens):
        raise ChoralError(f"{path}: model vocabulary {config.vocab_size} != token table size {len(tokens)}")
    model = Transducer(config)
    _load_weights(path, model, payload["state_dict"])
    model.eval()
    return model, tokens
