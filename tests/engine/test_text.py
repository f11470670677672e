"""The words of the stores' text indexes: ASCII text takes a fast path that must fold
exactly as the general (Unicode) one does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tidings.engine.store.text import words


def test_ascii_words_are_lower_case_letters_and_digits() -> None:
    assert words("Hi, I'm_OK\tORDER#12 order 12") == ["hi", "i", "m", "ok", "order", "12"]
    assert words("".join(map(chr, range(128)))) == ["0123456789", "abcdefghijklmnopqrstuvwxyz"]


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_fast_path_folds_as_the_unicode_path(text: str) -> None:
    # a non-ASCII word after the text sends the whole text through the Unicode path
    unicode_path = words(f"{text} Ære")
    assert unicode_path[-1] == "ære" and words(text) == [w for w in unicode_path if w != "ære"]
