"""The ``icefall`` teacher backend: a transducer directory exactly as icefall's ``export-onnx.py`` writes it for
sherpa-onnx (and as :mod:`.icefall_export` writes choral's stateless teacher).

The layout, recognised from the files and the decoder's metadata:

- ``encoder.onnx`` (``x (N, T, 80)`` raw fbank, ``x_lens`` -> ``encoder_out``,
  ``encoder_out_lens``), ``joiner.onnx`` (``encoder_out``, ``decoder_out`` -> ``logit``);
- ``decoder.onnx``: stateless, one input ``y (N, context_size)``, with the metadata
  keys sherpa-onnx reads, ``vocab_size`` and ``context_size``;
- ``tokens.txt``; and ``bpe.model`` when the tokens are word pieces: texts are
  segmented by the model's own sentencepiece model, as it was trained
  (:class:`~.bpe.SentencePieceTable`), never by longest match over ``tokens.txt``.

choral's own older export (a stateful LSTM decoder, ``decoder_kind=lstm``) is
left to the ``onnx`` backend (:mod:`.onnx_backend`). Decoding runs the same
batched modified beam search and exact scoring as every choral teacher, over the
stateless decoder (:class:`~.onnx_backend.OnnxTransducer`); the features are raw
log-mel fbank as lhotse computes them (sherpa-onnx's kaldi-native-fbank settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from lhotse.cut import Cut

from ..errors import ChoralError
from .bpe import BPE_FILE, SentencePieceTable, check_tokens_match
from .onnx_backend import OnnxTransducer, OnnxTransducerTeacher, read_tokens, signature
from .onnx_export import MODEL_FILES, TOKENS_FILE
from .registry import register_teacher_backend
from .search import greedy_search
from .tokens import TokenTable

ICEFALL_FILES = (*MODEL_FILES, TOKENS_FILE)
DECODER_KEYS = ("vocab_size", "context_size")  # what sherpa-onnx's offline transducer reads from decoder.onnx
_LAYOUT = f"the icefall layout: {', '.join(ICEFALL_FILES)} and {BPE_FILE} for word pieces"


def decoder_info(directory: Path) -> tuple[list[tuple[str, list[Any]]], dict[str, str]]:
    """Inputs and metadata of ``directory/decoder.onnx``; ChoralError if it cannot be loaded."""
    described = signature(directory / "decoder.onnx")
    return [(name, list(shape)) for name, _, shape in described.inputs], described.metadata


def _declared_int(directory: Path, metadata: dict[str, str], key: str) -> int:
    if key not in metadata:
        raise ChoralError(f"{directory / 'decoder.onnx'}: metadata key {key!r} is missing "
                          f"(icefall's export-onnx.py writes {' and '.join(DECODER_KEYS)}; sherpa-onnx needs them)")
    try:
        return int(metadata[key])
    except ValueError:
        raise ChoralError(f"{directory / 'decoder.onnx'}: metadata {key}={metadata[key]!r} is not an integer") from None


def icefall_files(directory: str | Path) -> list[Path]:
    """The files of an icefall-layout directory, checked; ChoralError naming the missing or unexpected one."""
    directory = Path(directory)
    missing = [name for name in ICEFALL_FILES if not (directory / name).is_file()]
    if missing:
        raise ChoralError(f"{directory}: lacks {', '.join(missing)} ({_LAYOUT})")
    inputs, metadata = decoder_info(directory)
    if metadata.get("decoder_kind", "stateless") != "stateless":
        raise ChoralError(f"{directory / 'decoder.onnx'}: decoder_kind={metadata['decoder_kind']!r}, "
                          "not a stateless decoder")
    if len(inputs) != 1 or len(inputs[0][1]) != 2:
        shapes = ", ".join(f"{name} {shape}" for name, shape in inputs)
        raise ChoralError(f"{directory / 'decoder.onnx'}: a stateless decoder takes one input y (N, context_size), "
                          f"this one takes {shapes or 'none'}")
    vocab_size, context_size = (_declared_int(directory, metadata, key) for key in DECODER_KEYS)
    static = inputs[0][1][1]
    if context_size < 1 or (isinstance(static, int) and static != context_size):
        raise ChoralError(f"{directory / 'decoder.onnx'}: metadata context_size={context_size} does not match "
                          f"its input y {inputs[0][1]}")
    tokens = read_tokens(directory / TOKENS_FILE)
    if len(tokens) != vocab_size:
        raise ChoralError(f"{directory / 'decoder.onnx'}: metadata vocab_size={vocab_size}, but {TOKENS_FILE} "
                          f"has {len(tokens)} tokens")
    files = [directory / name for name in ICEFALL_FILES]
    if (directory / BPE_FILE).is_file():
        files.append(directory / BPE_FILE)
    elif _word_pieces(tokens):
        raise ChoralError(f"{directory}: lacks {BPE_FILE} (its {TOKENS_FILE} holds word pieces; texts are scored "
                          "with the model's own sentencepiece segmentation)")
    return files


def _word_pieces(tokens: TokenTable) -> bool:
    return any(len(s.strip()) > 1 for i, s in enumerate(tokens.symbols) if i and not s.startswith("<"))


def icefall_tokens(directory: str | Path) -> TokenTable:
    """The vocabulary: ``bpe.model``'s segmentation (checked against ``tokens.txt``), or the characters of
    ``tokens.txt`` when there is no ``bpe.model``."""
    directory = Path(directory)
    if (directory / BPE_FILE).is_file():
        table = SentencePieceTable.from_file(directory / BPE_FILE)
        check_tokens_match(table, directory / TOKENS_FILE)
        return table
    return read_tokens(directory / TOKENS_FILE)


class IcefallTeacher(OnnxTransducerTeacher):
    """An :class:`~.onnx_backend.OnnxTransducerTeacher` over an icefall-layout directory, with greedy search."""

    @torch.inference_mode()
    def greedy_features(self, features: Sequence[Any]) -> list[tuple[str, list[int], float]]:
        """Greedy 1-best ``(text, tokens, path score)`` per feature matrix (one symbol per frame at most)."""
        if not features:
            return []
        projected, lengths, _ = self.model.encode(features)
        return [(self.tokens.decode(h.tokens), list(h.tokens), h.score)
                for h in greedy_search(self.model, projected, lengths)]

    def greedy(self, cuts: Sequence[Cut]) -> list[tuple[str, list[int], float]]:
        """Greedy 1-best ``(text, tokens, path score)`` per cut."""
        return self.greedy_features(self.features(cuts))


def load_icefall_teacher(directory: str | Path, *, beam: int = 8, nbest: int = 8,
                         search_temperature: float = 1.0) -> IcefallTeacher:
    """The teacher of an icefall-layout directory; ChoralError if it is incomplete or not that layout."""
    icefall_files(directory)
    tokens = icefall_tokens(directory)
    model = OnnxTransducer(directory, len(tokens))
    if model.kind != "stateless" or model.cmvn:
        raise ChoralError(f"{directory}: not the icefall layout (decoder {model.kind}, features normalised outside)")
    return IcefallTeacher(model, tokens, beam=beam, nbest=nbest, search_temperature=search_temperature)


@register_teacher_backend
class IcefallBackend:
    """A directory whose decoder is stateless (or that holds a ``bpe.model``): the icefall / sherpa-onnx layout."""

    name = "icefall"
    kind = "an icefall-layout teacher directory"
    description = (f"a directory in the icefall/sherpa-onnx layout ({', '.join(ICEFALL_FILES)}, {BPE_FILE}; "
                   "icefall's export-onnx.py)")

    def claims(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        if (path / BPE_FILE).is_file():
            return True
        decoder = path / "decoder.onnx"
        if not decoder.is_file():
            return False
        try:
            _, metadata = decoder_info(path)
        except ChoralError:
            return False  # the onnx backend reports an unloadable model
        return metadata.get("decoder_kind", "stateless") == "stateless"

    def files(self, path: Path) -> list[Path]:
        return icefall_files(path)

    def open(self, path: Path, *, beam: int, nbest: int, search_temperature: float) -> IcefallTeacher:
        return load_icefall_teacher(path, beam=beam, nbest=nbest, search_temperature=search_temperature)
