"""Export choral's :class:`Transducer` to ONNX in the icefall / sherpa-onnx directory layout.

``OUT_DIR`` receives

- ``encoder.onnx``: ``x (N, T, mel)`` float32 + ``x_lens (N,)`` int64 ->
  ``encoder_out (N, T', J)`` (frames already projected for the joiner, as icefall
  exports do), ``encoder_out_lens (N,)`` and, choral's addition, ``encoder_frames
  (N, T', D)``: the raw encoder frames that the torch teacher stores and pools;
- ``decoder.onnx``: ``y (N, 1)`` int64 (the previous symbol) + LSTM state ``h``,
  ``c`` ``(layers, N, H)`` -> ``decoder_out (N, J)`` (projected), ``next_h``,
  ``next_c``. choral's prediction network is an LSTM, so unlike icefall's
  stateless decoder (``y (N, context_size)`` -> ``decoder_out``) it carries state;
- ``joiner.onnx``: ``encoder_out (N, J)`` + ``decoder_out (N, J)`` -> ``logit (N, V)``;
- ``tokens.txt``: ``<symbol> <id>`` per line (sherpa format); blank is ``<blk> 0``
  and the space, which the format cannot hold, is written as ``▁``.

Every model file carries the same metadata (ONNX ``metadata_props``, read back
through onnxruntime's ``custom_metadata_map``) so a loader knows the decoder
kind and the features the encoder expects. Writing it needs the ``onnx``
package, which torch's exporter needs anyway (``pip install 'choral[onnx]'``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ChoralError
from ..manifest import atomic_output
from ..meta import choral_version
from .model import Transducer
from .tokens import BLANK, TokenTable

MODEL_FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx")
TOKENS_FILE = "tokens.txt"
SPACE_SYMBOL = "\u2581"  # "▁", sentencepiece's word boundary: sherpa-onnx prints it as a space
OPSET = 17


class _Encoder(nn.Module):
    """Features -> projected frames, their lengths, and the raw frames (for embeddings)."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frames, lengths = self.model.encode(x, x_lens)
        return self.model.enc_proj(frames), lengths, frames


class _Decoder(nn.Module):
    """One step of the prediction network: previous symbol + LSTM state -> projected output + new state."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (next_h, next_c) = self.model.predict(y, (h, c))
        return self.model.pred_proj(out[:, -1]), next_h, next_c


class _Joiner(nn.Module):
    """Projected encoder and predictor vectors -> logits."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.model.join(encoder_out, decoder_out)


def export_metadata(model: Transducer) -> dict[str, str]:
    """The ``metadata_props`` written into every model file (all values strings, as ONNX requires)."""
    c = model.config
    return {
        "model_type": "choral-lstm-transducer",
        "comment": "exported by choral export-teacher",
        "vocab_size": str(c.vocab_size),
        "blank_id": str(BLANK),
        "context_size": "1",
        "decoder_kind": "lstm",
        "encoder_dim": str(model.encoder_dim),
        "joiner_dim": str(c.joiner_dim),
        "predictor_layers": str(c.predictor_layers),
        "predictor_hidden": str(c.predictor_hidden),
        "num_mel_bins": str(c.num_mel_bins),
        "subsampling_factor": "4",
        "feature_normalization": "utterance_cmvn",
        "choral_version": choral_version(),
    }


def sherpa_symbol(symbol: str) -> str:
    """A token as tokens.txt can hold it: no whitespace (the space becomes ``▁``)."""
    out = symbol.replace(" ", SPACE_SYMBOL)
    if not out or any(ch.isspace() for ch in out):
        raise ChoralError(f"token {symbol!r} cannot be written to {TOKENS_FILE}")
    return out


def write_tokens(tokens: TokenTable, path: str | Path) -> None:
    """``tokens.txt`` in sherpa format: ``<symbol> <id>`` per line, blank first."""
    with atomic_output(path) as tmp:
        tmp.write_text("".join(f"{sherpa_symbol(s)} {i}\n" for i, s in enumerate(tokens.symbols)), encoding="utf-8")


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise ChoralError("exporting to ONNX needs the onnx package: pip install 'choral[onnx]'") from None
    return onnx


def export_module(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]], metadata: dict[str, str], opset: int = OPSET) -> None:
    """Trace ``module`` to ``path`` (TorchScript exporter, ONNX ``opset``) and add ``metadata``, atomically."""
    onnx = require_onnx()
    with atomic_output(path) as tmp:
        with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer warnings
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(tmp), dynamo=False, input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=opset)
        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))


@torch.no_grad()
def export_onnx(model: Transducer, tokens: TokenTable, out_dir: str | Path) -> Path:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` and ``tokens.txt`` of ``model`` into ``out_dir``."""
    if model.config.vocab_size != len(tokens):
        raise ChoralError(f"model vocabulary {model.config.vocab_size} != token table size {len(tokens)}")
    require_onnx()  # fail before writing anything
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = model.config
    metadata = export_metadata(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        # Two utterances of different lengths, so the trace keeps the padding logic general.
        x = torch.randn(2, 57, c.num_mel_bins, device=device)
        x_lens = torch.tensor([57, 33], dtype=torch.long, device=device)
        export_module(_Encoder(model), (x, x_lens), out_dir / "encoder.onnx", ["x", "x_lens"],
                      ["encoder_out", "encoder_out_lens", "encoder_frames"],
                      {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T_out"},
                       "encoder_out_lens": {0: "N"}, "encoder_frames": {0: "N", 1: "T_out"}}, metadata)
        state = torch.zeros(c.predictor_layers, 2, c.predictor_hidden, device=device)
        start = torch.full((2, 1), BLANK, dtype=torch.long, device=device)
        export_module(_Decoder(model), (start, state, state.clone()), out_dir / "decoder.onnx", ["y", "h", "c"],
                      ["decoder_out", "next_h", "next_c"],
                      {"y": {0: "N"}, "h": {1: "N"}, "c": {1: "N"}, "decoder_out": {0: "N"},
                       "next_h": {1: "N"}, "next_c": {1: "N"}}, metadata)
        vectors = torch.randn(2, c.joiner_dim, device=device)
        export_module(_Joiner(model), (vectors, vectors.clone()), out_dir / "joiner.onnx",
                      ["encoder_out", "decoder_out"], ["logit"],
                      {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}}, metadata)
    finally:
        model.train(was_training)
    write_tokens(tokens, out_dir / TOKENS_FILE)
    return out_dir
