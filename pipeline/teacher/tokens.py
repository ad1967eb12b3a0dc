"""Character units of the teacher: blank, space, a-z and the apostrophe.

Text goes through the project's :class:`~choral.pipeline.text.TextNormalizer`
(digits spelled) before encoding, so what the teacher is trained on and what it
emits use the same words as grouping and WER. Characters the normaliser leaves
but the table lacks (accented letters) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..text import TextNormalizer

BLANK = 0
DEFAULT_SYMBOLS: tuple[str, ...] = ("<blk>", " ", *"abcdefghijklmnopqrstuvwxyz", "'")


@dataclass(frozen=True)
class TokenTable:
    """Symbol <-> id mapping with blank at id 0."""

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    normalizer: TextNormalizer = field(default_factory=lambda: TextNormalizer(digits="spell"))

    def __post_init__(self) -> None:
        if not self.symbols or self.symbols[BLANK] != "<blk>":
            raise ValueError("the first symbol of a token table must be the blank <blk>")
        object.__setattr__(self, "_ids", {s: i for i, s in enumerate(self.symbols)})

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str | None) -> list[int]:
        """Token ids of the normalised ``text`` (unknown characters dropped)."""
        ids = self._ids  # type: ignore[attr-defined]
        return [ids[c] for c in self.normalizer(text) if c in ids and ids[c] != BLANK]

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``: blanks and out-of-range ids skipped, spaces collapsed."""
        chars = [self.symbols[t] for t in tokens if 0 < t < len(self.symbols)]
        return " ".join("".join(chars).split())

    def to_list(self) -> list[str]:
        return list(self.symbols)

    @classmethod
    def from_list(cls, symbols: Sequence[str]) -> "TokenTable":
        return cls(symbols=tuple(symbols))
