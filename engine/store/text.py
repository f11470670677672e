"""Words for the stores' text indexes: one definition, so every backend finds the same.

A text is split into words of letters and digits (Unicode: `str.isalnum`); anything else
separates them (spaces, punctuation, apostrophes, ``_``). Words are compared without
case (`str.casefold`) and without accents (NFKD, combining marks dropped), so "Perché"
matches "perche" and "ß" matches "ss". A word longer than `MAX_WORD` characters is cut
there, on both sides, so it is still found.

The words are plain letters and digits: a backend can quote them into its own query
syntax (SQLite FTS5, Redis keys) without anything in them meaning something there.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

MAX_WORD: Final = 64
_WORD: Final = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The distinct words of `text`, folded (see the module docstring), in order of first use."""
    if text.isascii():  # the common case: folding ASCII is lower-casing it
        plain = text.lower()
    else:
        folded = unicodedata.normalize("NFKD", text.casefold())
        plain = "".join(c for c in folded if not unicodedata.combining(c))
    return list(dict.fromkeys(w[:MAX_WORD] for w in _WORD.findall(plain)))
