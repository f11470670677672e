"""Link shortening for outbound SMS (R17): finding links in a text, replacing them with
short links served by the engine, and the short codes themselves."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

CODE_LENGTH = 8
"""Characters in a short-link code (base62: about 47 bits)."""

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# A link starts with http:// or https:// (any case), not glued to a preceding word, and
# runs to the next whitespace or character that cannot be in a URL in running text.
_CANDIDATE = re.compile(r"(?<![\w@/.+-])https?://[^\s<>\"`]+", re.IGNORECASE)
# What can follow a link in a sentence without belonging to it.
_TRAILING = ".,;:!?'\u2019\u201d\u00bb\u2026*_"
_CLOSERS = {")": "(", "]": "[", "}": "{"}


@dataclass(slots=True, frozen=True)
class Link:
    """A link found in a text: the URL and where it is (`start`, `end` as in slicing)."""

    url: str
    start: int
    end: int


def _trim(url: str) -> str:
    """The URL without the sentence punctuation that followed it."""
    while url:
        last = url[-1]
        if last in _TRAILING:
            url = url[:-1]
        elif last in _CLOSERS and url.count(last) > url.count(_CLOSERS[last]):
            # An unbalanced closing bracket belongs to the text around the link,
            # as in "(see https://example.com)"; a balanced one is part of it, as in
            # https://en.wikipedia.org/wiki/Mercury_(planet).
            url = url[:-1]
        else:
            break
    return url


def _has_host(url: str) -> bool:
    """Whether something that can be a host name follows the scheme."""
    rest = url.split("://", 1)[1]
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return any(c.isalnum() for c in host)


def find_links(text: str) -> list[Link]:
    """The http and https links in a text, in order, without the punctuation after them."""
    links: list[Link] = []
    for match in _CANDIDATE.finditer(text):
        url = _trim(match.group())
        if not _has_host(url):
            continue
        links.append(Link(url=url, start=match.start(), end=match.start() + len(url)))
    return links


def short_link(base_url: str, code: str) -> str:
    """The short link for a code: `{base_url}/l/{code}`."""
    return f"{base_url.rstrip('/')}/l/{code}"


def shorten(
    text: str, make_code: Callable[[str], str], base_url: str
) -> tuple[str, list[tuple[str, str]]]:
    """The text with every link replaced by its short link, and the `(code, url)` pairs made.

    `make_code` is called once per distinct URL, in order of first appearance; a URL that
    appears twice gets the same short link. Links that already are short links of
    `base_url` are left as they are.
    """
    prefix = short_link(base_url, "")
    codes: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    pieces: list[str] = []
    position = 0
    for link in find_links(text):
        if link.url.startswith(prefix):
            continue
        code = codes.get(link.url)
        if code is None:
            code = make_code(link.url)
            codes[link.url] = code
            pairs.append((code, link.url))
        pieces.append(text[position : link.start])
        pieces.append(short_link(base_url, code))
        position = link.end
    pieces.append(text[position:])
    return "".join(pieces), pairs


def link_code(secret: bytes, message_id: str, index: int) -> str:
    """A short code for the `index`-th link of a message: 8 base62 characters, the same
    for the same inputs, and not guessable without the secret."""
    digest = hmac.new(secret, f"{message_id}\x00{index}".encode(), hashlib.sha256).digest()
    number = int.from_bytes(digest[:8], "big")
    chars: list[str] = []
    for _ in range(CODE_LENGTH):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


def message_link_codes(secret: bytes, message_id: str) -> Callable[[str], str]:
    """A `make_code` for `shorten` that gives one message's links the codes
    `link_code(secret, message_id, 0)`, `…, 1)`, … in the order it is called."""
    made = 0

    def make_code(url: str) -> str:
        nonlocal made
        code = link_code(secret, message_id, made)
        made += 1
        return code

    return make_code
