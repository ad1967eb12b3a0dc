"""Export a :class:`~.stateless.StatelessTransducer` exactly in the layout icefall's ``export-onnx.py`` writes
for sherpa-onnx's offline transducer.

``OUT_DIR`` receives

- ``encoder.onnx``: ``x (N, T, 80)`` float32 raw fbank + ``x_lens (N,)`` int64 ->
  ``encoder_out (N, T', joiner_dim)`` (already through ``encoder_proj``) and
  ``encoder_out_lens (N,)``; metadata ``model_type``, ``version``, ``model_author``,
  ``comment``. sherpa-onnx, when not told the model type, dispatches on
  ``model_type``, and treats ``conformer``, ``zipformer`` and ``zipformer2`` alike
  as "an icefall offline transducer" (inputs ``x, x_lens``); the encoder is
  written as ``zipformer2``, what icefall's current ``export-onnx.py`` writes, and
  ``comment`` and ``encoder_kind`` say what it really is;
- ``decoder.onnx``: ``y (N, context_size)`` int64 -> ``decoder_out (N, joiner_dim)``
  (through ``decoder_proj``); metadata ``context_size`` and ``vocab_size``, the two
  keys sherpa-onnx reads;
- ``joiner.onnx``: ``encoder_out (N, joiner_dim)`` + ``decoder_out (N, joiner_dim)``
  -> ``logit (N, vocab_size)``; metadata ``joiner_dim``;
- ``tokens.txt``: ``<piece> <id>`` per line with sentencepiece's spelling (``▁``);
- ``bpe.model``: the sentencepiece model itself, so texts are segmented as the model's.

The directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ChoralError
from ..manifest import atomic_directory
from ..meta import choral_version
from .bpe import BPE_FILE, SentencePieceTable
from .onnx_export import MODEL_FILES, TOKENS_FILE, export_module, require_onnx
from .stateless import StatelessTransducer

ICEFALL_OPSET = 13  # icefall's export-onnx.py uses opset 13
ENCODER_MODEL_TYPE = "zipformer2"


class _Encoder(nn.Module):
    """Raw fbank -> projected encoder frames and their lengths (icefall's OnnxEncoder interface)."""

    def __init__(self, model: StatelessTransducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, lengths = self.model.encode(x, x_lens)
        return self.model.encoder_proj(frames), lengths


class _Decoder(nn.Module):
    """The last ``context_size`` symbols -> projected decoder output (icefall's OnnxDecoder interface)."""

    def __init__(self, model: StatelessTransducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.model.decoder_proj(self.model.decoder(y, need_pad=False)[:, -1])


class _Joiner(nn.Module):
    """Projected encoder and decoder vectors -> logits (icefall's OnnxJoiner interface)."""

    def __init__(self, model: StatelessTransducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.model.join(encoder_out, decoder_out)


def icefall_metadata(model: StatelessTransducer) -> dict[str, dict[str, str]]:
    """The metadata of each model file, keyed by file name (values are strings, as ONNX requires)."""
    c = model.config
    kind = f"{'bi' if c.bidirectional else ''}lstm"
    return {
        "encoder.onnx": {"model_type": ENCODER_MODEL_TYPE, "version": "1", "model_author": "choral",
                         "comment": f"non-streaming choral stateless transducer ({kind} encoder, not a zipformer)",
                         "encoder_kind": kind, "num_mel_bins": str(c.num_mel_bins),
                         "feature_normalization": "inside_encoder", "choral_version": choral_version()},
        "decoder.onnx": {"context_size": str(c.context_size), "vocab_size": str(c.vocab_size)},
        "joiner.onnx": {"joiner_dim": str(c.joiner_dim)},
    }


@torch.no_grad()
def export_icefall(model: StatelessTransducer, tokens: SentencePieceTable, out_dir: str | Path) -> Path:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx``, ``tokens.txt`` and ``bpe.model`` of ``model``
    into ``out_dir`` (replaced as a whole when complete)."""
    c = model.config
    if c.vocab_size != len(tokens):
        raise ChoralError(f"model vocabulary {c.vocab_size} != {len(tokens)} sentencepiece pieces")
    require_onnx()  # fail before writing anything
    metadata = icefall_metadata(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out_dir = Path(out_dir)
    try:
        with atomic_directory(out_dir) as tmp:
            # two utterances of different lengths, so the trace keeps the padding logic general
            x = torch.randn(2, 57, c.num_mel_bins, device=device)
            x_lens = torch.tensor([57, 33], dtype=torch.long, device=device)
            export_module(_Encoder(model), (x, x_lens), tmp / "encoder.onnx", ["x", "x_lens"],
                          ["encoder_out", "encoder_out_lens"],
                          {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T"},
                           "encoder_out_lens": {0: "N"}}, metadata["encoder.onnx"], opset=ICEFALL_OPSET)
            y = torch.zeros(2, c.context_size, dtype=torch.long, device=device)
            export_module(_Decoder(model), (y,), tmp / "decoder.onnx", ["y"], ["decoder_out"],
                          {"y": {0: "N"}, "decoder_out": {0: "N"}}, metadata["decoder.onnx"], opset=ICEFALL_OPSET)
            vectors = torch.randn(2, c.joiner_dim, device=device)
            export_module(_Joiner(model), (vectors, vectors.clone()), tmp / "joiner.onnx",
                          ["encoder_out", "decoder_out"], ["logit"],
                          {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}},
                          metadata["joiner.onnx"], opset=ICEFALL_OPSET)
            (tmp / TOKENS_FILE).write_text(tokens.tokens_txt(), encoding="utf-8")
            (tmp / BPE_FILE).write_bytes(tokens.model_bytes)
    finally:
        model.train(was_training)
    assert all((out_dir / name).is_file() for name in MODEL_FILES)
    return out_dir
