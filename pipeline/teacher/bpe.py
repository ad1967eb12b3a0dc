"""Word-piece vocabularies read and made with sentencepiece, as icefall's recipes make them (``bpe.model``).

icefall's ``local/train_bpe_model.py`` trains a sentencepiece model whose first
pieces are the user-defined ``<blk>`` (id 0, the transducer's blank) and
``<sos/eos>`` (id 1), with ``<unk>`` at id 2 and no bos/eos; ``tokens.txt`` lists
the pieces with their ids (``▁`` marks a word start). A transducer is trained on
the model's own segmentation of each transcript, so a text is scored as the
model would have seen it only when it is segmented by ``bpe.model``: greedy
longest matching over ``tokens.txt`` picks other pieces (``▁CAT S`` where the
model says ``▁C ATS``) and gives the text a probability the model never meant.

:class:`SentencePieceTable` is that segmentation behind choral's
:class:`~.tokens.TokenTable` interface; :func:`train_bpe_model` makes a
``bpe.model`` in icefall's convention (tests build tiny ones; the teacher's
training recipe builds the real one from its training text).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ChoralError
from ..manifest import atomic_output
from .tokens import BLANK, TokenTable

BPE_FILE = "bpe.model"
SPACE_SYMBOL = "\u2581"  # "▁", sentencepiece's word-start mark
# icefall's convention: blank and sos/eos are user-defined pieces 0 and 1, unk is 2
USER_DEFINED_SYMBOLS = ("<blk>", "<sos/eos>")
UNK_ID = len(USER_DEFINED_SYMBOLS)


def _sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise ChoralError("word-piece teachers need sentencepiece: pip install 'choral[onnx]'") from None
    return sentencepiece


def processor_from_bytes(proto: bytes, origin: str = "bpe model") -> Any:
    """The ``SentencePieceProcessor`` of a serialised sentencepiece model; ChoralError if it is not one."""
    spm = _sentencepiece()
    if not proto:
        raise ChoralError(f"{origin}: sentencepiece model not found or empty")
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(proto)
    except Exception as error:  # sentencepiece raises RuntimeError/OSError with multi-line text
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ChoralError(f"{origin}: not a sentencepiece model ({reason})") from None
    if processor.GetPieceSize() < 1 or processor.IdToPiece(BLANK) != "<blk>":
        raise ChoralError(f"{origin}: piece {BLANK} must be the blank <blk> (icefall's convention), "
                          f"not {processor.IdToPiece(BLANK) if processor.GetPieceSize() else None!r}")
    return processor


@dataclass(frozen=True, eq=False)
class SentencePieceTable(TokenTable):
    """Token table whose ``encode`` is the sentencepiece model's own segmentation.

    ``symbols`` are the pieces with ``▁`` read as a space (so ``decode`` joins them
    into words, as sherpa-onnx prints them). Texts go through choral's normaliser
    first (digits spelled, lower case); a model whose pieces are upper case
    (icefall's English recipes) gets the text upper-cased, and its decoded texts
    are given back in the normaliser's case, so ``decode(encode(text))`` is the
    normalised text. ``<blk>`` is never produced.
    """

    processor: Any = None
    model_bytes: bytes = b""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.processor is None:
            raise ValueError("a SentencePieceTable needs its sentencepiece processor")
        if self.processor.GetPieceSize() != len(self.symbols):
            raise ValueError(f"sentencepiece model has {self.processor.GetPieceSize()} pieces, "
                             f"token table {len(self.symbols)}")
        letters = "".join(s for s in self.symbols if not s.startswith("<"))
        upper = sum(ch.isupper() for ch in letters) > sum(ch.islower() for ch in letters)
        object.__setattr__(self, "_upper", upper)

    @property
    def upper_case(self) -> bool:
        """Whether the model's pieces are upper case (texts are upper-cased before segmentation)."""
        return bool(self._upper)  # type: ignore[attr-defined]

    def pieces(self, text: str | None) -> list[str]:
        """The pieces of the normalised ``text`` as the model segments it (for messages and tests)."""
        return [self.processor.IdToPiece(i) for i in self.encode(text)]

    def decode(self, tokens: Sequence[int]) -> str:
        text = super().decode(tokens)
        return text.lower() if self.upper_case and self.normalizer.lowercase else text

    def encode(self, text: str | None) -> list[int]:
        normalised = self.normalizer(text)
        if self.upper_case:
            normalised = normalised.upper()
        if not normalised.strip():
            return []
        return [i for i in self.processor.EncodeAsIds(normalised) if i != BLANK]

    @classmethod
    def from_model(cls, proto: bytes, origin: str = "bpe model") -> "SentencePieceTable":
        """The table of a serialised sentencepiece model (pieces in id order)."""
        processor = processor_from_bytes(proto, origin)
        symbols = tuple(piece_symbol(processor.IdToPiece(i)) for i in range(processor.GetPieceSize()))
        return cls(symbols=symbols, processor=processor, model_bytes=proto)

    @classmethod
    def from_file(cls, path: str | Path) -> "SentencePieceTable":
        path = Path(path)
        if not path.is_file():
            raise ChoralError(f"{path}: sentencepiece model not found")
        return cls.from_model(path.read_bytes(), str(path))

    def tokens_txt(self) -> str:
        """``tokens.txt`` as icefall writes it: ``<piece> <id>`` per line, pieces as sentencepiece spells them."""
        return "".join(f"{self.processor.IdToPiece(i)} {i}\n" for i in range(len(self.symbols)))


def piece_symbol(piece: str) -> str:
    """A piece as choral's token tables hold it: ``▁`` read as a space."""
    return piece.replace(SPACE_SYMBOL, " ")


def check_tokens_match(table: SentencePieceTable, tokens_path: str | Path) -> None:
    """ChoralError unless ``tokens.txt`` lists exactly the model's pieces at the model's ids."""
    path = Path(tokens_path)
    listed: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ChoralError(f"{path}:{number}: expected '<symbol> <id>', got {line!r}")
        listed[int(parts[1])] = parts[0]
    size = len(table.symbols)
    if len(listed) != size:
        raise ChoralError(f"{path}: {len(listed)} tokens, but {BPE_FILE} has {size} pieces")
    for i in range(size):
        piece = table.processor.IdToPiece(i)
        if listed.get(i) != piece:
            raise ChoralError(f"{path}: id {i} is {listed.get(i)!r} but {BPE_FILE} has {piece!r}")


def train_bpe_model(texts: Iterable[str], vocab_size: int, *, model_type: str = "unigram",
                    normalizer: TokenTable | None = None, out: str | Path | None = None) -> SentencePieceTable:
    """Train a sentencepiece model in icefall's convention on ``texts`` (normalised as choral normalises
    transcripts, upper-cased as icefall's English recipes are); write it to ``out`` when given.

    ``<blk>`` is id 0, ``<sos/eos>`` id 1, ``<unk>`` id 2, no bos/eos. ``model_type``
    is sentencepiece's (icefall's recipes use ``unigram`` and call the result ``bpe.model``).
    ``vocab_size`` is an upper bound: a small corpus may give fewer pieces.
    """
    spm = _sentencepiece()
    table = normalizer or TokenTable()
    lines = [table.normalizer(text).upper() for text in texts]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ChoralError("cannot train a sentencepiece model on no text")
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buffer, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, user_defined_symbols=list(USER_DEFINED_SYMBOLS), unk_id=UNK_ID,
            bos_id=-1, eos_id=-1, hard_vocab_limit=False, minloglevel=2, num_threads=1)
    except RuntimeError as error:
        reason = (str(error).strip().splitlines() or ["failed"])[0][:200]
        raise ChoralError(f"sentencepiece training failed ({reason})") from None
    proto = buffer.getvalue()
    if out is not None:
        with atomic_output(out) as tmp:
            tmp.write_bytes(proto)
    return SentencePieceTable.from_model(proto, str(out) if out is not None else "trained bpe model")

