"""SMS encoding and segment count of an outbound body (R26)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SmsEncodingName = Literal["GSM-7", "UCS-2"]

GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""Characters of the GSM 03.38 default alphabet: one septet each."""

GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")
"""Characters of the GSM 03.38 extension table: an escape plus a septet, two each."""

GSM7_SINGLE = 160
"""Septets in a GSM-7 message that fits in one SMS."""
GSM7_PART = 153
"""Septets per part of a concatenated GSM-7 message (7 go to the UDH)."""
UCS2_SINGLE = 70
"""UTF-16 code units in a UCS-2 message that fits in one SMS."""
UCS2_PART = 67
"""UTF-16 code units per part of a concatenated UCS-2 message."""


@dataclass(slots=True, frozen=True)
class SmsEncoding:
    """How an SMS body travels: its encoding, how many SMS it takes, and its length in
    the encoding's units (GSM-7 septets or UTF-16 code units)."""

    encoding: SmsEncodingName
    segments: int
    units: int


def is_gsm7(body: str) -> bool:
    """Whether every character of the body is in the GSM-7 alphabet (basic or extension)."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body)


def _unit_widths(body: str, encoding: SmsEncodingName) -> list[int]:
    """The width of each character in units; a character is never split across parts."""
    if encoding == "GSM-7":
        return [2 if c in GSM7_EXTENSION else 1 for c in body]
    return [2 if ord(c) > 0xFFFF else 1 for c in body]


def _parts(widths: list[int], per_part: int) -> int:
    """How many parts of `per_part` units the characters fill, none split across two."""
    parts = 1
    used = 0
    for width in widths:
        if used + width > per_part:
            parts += 1
            used = 0
        used += width
    return parts


def encode_info(body: str) -> SmsEncoding:
    """The encoding, segment count and unit length of an SMS body.

    GSM-7 when every character is in the GSM 03.38 alphabet (extension characters count
    two septets), else UCS-2 counted in UTF-16 code units (an emoji is two). A body that
    fits a single SMS (160 septets / 70 units) is one segment; a longer one is split in
    parts of 153 septets / 67 units, and like carriers do a part never ends in the
    middle of an extension character's escape pair or of a surrogate pair, so such a
    character moves whole to the next part. An empty body is one GSM-7 segment of 0
    units (an SMS is still sent). No character is substituted (no "smart encoding").
    """
    encoding: SmsEncodingName = "GSM-7" if is_gsm7(body) else "UCS-2"
    widths = _unit_widths(body, encoding)
    units = sum(widths)
    single, per_part = (GSM7_SINGLE, GSM7_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    segments = 1 if units <= single else _parts(widths, per_part)
    return SmsEncoding(encoding=encoding, segments=segments, units=units)
