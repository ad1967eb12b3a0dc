"""One text normaliser for grouping, propagation and WER, so they all agree on what a word is."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import ConfigError

# The digits policies, defined here only: the run config's ``digits`` and the CLI's ``--digits`` use them.
DigitsPolicy = Literal["keep", "spell", "drop"]
DIGITS_POLICIES: tuple[str, ...] = get_args(DigitsPolicy)

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Apostrophes inside words ("don't", "o'clock") survive; every other symbol becomes a space.
_NOT_WORD = re.compile(r"[^\w']+|(?<!\w)'|'(?!\w)|_")
_DIGIT_RUN = re.compile(r"\d+")


@dataclass(frozen=True)
class TextNormalizer:
    """Lower-case, strip punctuation, collapse whitespace, apply a digits policy.

    ``digits``:
      - ``"keep"``: digit strings stay as they are ("26784");
      - ``"spell"``: every digit becomes its word, as connected-digit prompts are read
        ("26784" -> "two six seven eight four"), so "call 26784" and
        "call two six seven eight four" normalise to the same words;
      - ``"drop"``: digit strings are removed.
    """

    digits: DigitsPolicy = "spell"
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.digits not in DIGITS_POLICIES:
            raise ConfigError("digits", f"must be {', '.join(DIGITS_POLICIES[:-1])} or {DIGITS_POLICIES[-1]}, "
                                        f"not {self.digits!r}")

    def __call__(self, text: str | None) -> str:
        """Return the normalised form of ``text`` (``None`` gives the empty string)."""
        if not text:
            return ""
        text = unicodedata.normalize("NFKC", text)
        text = text.replace("\u2019", "'")
        if self.lowercase:
            text = text.lower()
        if self.digits == "spell":
            text = _DIGIT_RUN.sub(lambda m: " " + " ".join(_DIGIT_WORDS[int(d)] for d in m.group()) + " ", text)
        elif self.digits == "drop":
            text = _DIGIT_RUN.sub(" ", text)
        return " ".join(_NOT_WORD.sub(" ", text).split())

    def words(self, text: str | None) -> list[str]:
        """The normalised words of ``text``."""
        return self(text).split()


DEFAULT_NORMALIZER = TextNormalizer()


def normalize(text: str | None) -> str:
    """Normalise with the default policy (lower-case, no punctuation, digits spelled)."""
    return DEFAULT_NORMALIZER(text)
