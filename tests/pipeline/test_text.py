import pytest

from choral.pipeline.text import TextNormalizer, normalize


def test_default_lowercases_strips_punctuation_and_spells_digits() -> None:
    assert normalize("Call 26784, please!") == "call two six seven eight four please"
    assert normalize("call two six seven eight four please") == "call two six seven eight four please"


def test_apostrophes_inside_words_survive_quotes_do_not() -> None:
    assert normalize("Don't play 'Jolene'  NOW.") == "don't play jolene now"
    assert normalize("it\u2019s five o'clock") == "it's five o'clock"


def test_digit_policies() -> None:
    assert TextNormalizer(digits="keep")("Room 101") == "room 101"
    assert TextNormalizer(digits="drop")("Room 101") == "room"
    with pytest.raises(ValueError):
        TextNormalizer(digits="roman")  # type: ignore[arg-type]


def test_empty_and_none() -> None:
    assert normalize(None) == ""
    assert normalize("  ... ") == ""
    assert TextNormalizer().words("a-b_c") == ["a", "b", "c"]
