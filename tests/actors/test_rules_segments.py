"""R26: encoding and segment count of outbound SMS."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.segments import GSM7_BASIC, GSM7_EXTENSION, SmsEncoding, encode_info, is_gsm7

EURO = "€"
ZHE = "ж"  # Cyrillic: not in GSM-7
GRIN = "😀"  # outside the BMP: a surrogate pair, two UTF-16 units

gsm_text = st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION))
gsm_basic_text = st.text(alphabet=sorted(GSM7_BASIC))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", SmsEncoding("GSM-7", 1, 0)),
        ("a", SmsEncoding("GSM-7", 1, 1)),
        ("a" * 160, SmsEncoding("GSM-7", 1, 160)),
        ("a" * 161, SmsEncoding("GSM-7", 2, 161)),
        ("a" * 306, SmsEncoding("GSM-7", 2, 306)),
        ("a" * 307, SmsEncoding("GSM-7", 3, 307)),
        ("a" * 459, SmsEncoding("GSM-7", 3, 459)),
        ("a" * 460, SmsEncoding("GSM-7", 4, 460)),
        ("a" * 158 + EURO, SmsEncoding("GSM-7", 1, 160)),
        ("a" * 159 + EURO, SmsEncoding("GSM-7", 2, 161)),
        (EURO * 80, SmsEncoding("GSM-7", 1, 160)),
        (EURO * 81, SmsEncoding("GSM-7", 2, 162)),
        ("é" * 160, SmsEncoding("GSM-7", 1, 160)),
        ("\f", SmsEncoding("GSM-7", 1, 2)),
        ("{}[]~^|\\", SmsEncoding("GSM-7", 1, 16)),
        ("Hello!\nYour order #123 has shipped.", SmsEncoding("GSM-7", 1, 35)),
        (ZHE, SmsEncoding("UCS-2", 1, 1)),
        (ZHE * 70, SmsEncoding("UCS-2", 1, 70)),
        (ZHE * 71, SmsEncoding("UCS-2", 2, 71)),
        (ZHE * 134, SmsEncoding("UCS-2", 2, 134)),
        (ZHE * 135, SmsEncoding("UCS-2", 3, 135)),
        (ZHE * 201, SmsEncoding("UCS-2", 3, 201)),
        (ZHE * 202, SmsEncoding("UCS-2", 4, 202)),
        (GRIN, SmsEncoding("UCS-2", 1, 2)),
        (GRIN * 35, SmsEncoding("UCS-2", 1, 70)),
        (GRIN * 36, SmsEncoding("UCS-2", 2, 72)),
        ("a" * 69 + GRIN, SmsEncoding("UCS-2", 2, 71)),
        ("a" * 100 + ZHE, SmsEncoding("UCS-2", 2, 101)),
        # An extension character is not counted double once the body is UCS-2.
        (EURO * 70 + ZHE, SmsEncoding("UCS-2", 2, 71)),
        (EURO * 69 + ZHE, SmsEncoding("UCS-2", 1, 70)),
        ("Thanks \u2019so much\u2019", SmsEncoding("UCS-2", 1, 16)),
    ],
)
def test_r26_known_encodings_and_segment_counts(body: str, expected: SmsEncoding) -> None:
    assert encode_info(body) == expected


def test_r26_gsm7_basic_alphabet_has_127_characters_and_extension_10() -> None:
    # 128 code points, one of which is the escape to the extension table.
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert GSM7_BASIC.isdisjoint(GSM7_EXTENSION)


@pytest.mark.parametrize("char", list("^{}\\[~]|€\f"))
def test_r26_gsm_extension_characters_count_double(char: str) -> None:
    assert encode_info(char) == SmsEncoding("GSM-7", 1, 2)
    assert encode_info("a" * 159 + char).segments == 2


@pytest.mark.parametrize("char", ["ç", "á", "`", "\t", "õ", "—", "“", "ж", "中", "😀"])
def test_r26_characters_outside_the_gsm_alphabet_force_ucs2(char: str) -> None:
    assert not is_gsm7(char)
    assert encode_info("hello " + char).encoding == "UCS-2"


def test_r26_escape_pair_is_not_split_across_parts() -> None:
    # Part 1 holds 152 septets: the euro would need septets 153 and 154, so it moves whole
    # to part 2 (2 + 151 = 153), and the last "a" needs a third part.
    body = "a" * 152 + EURO + "a" * 152
    assert encode_info(body) == SmsEncoding("GSM-7", 3, 306)
    # Without the split rule 306 septets would fit in 2 parts, as 306 plain letters do.
    assert encode_info("a" * 306).segments == 2


def test_r26_escape_pair_that_fits_exactly_stays_in_the_part() -> None:
    body = "a" * 151 + EURO + "a" * 153
    assert encode_info(body) == SmsEncoding("GSM-7", 2, 306)


def test_r26_surrogate_pair_is_not_split_across_parts() -> None:
    body = ZHE * 66 + GRIN + ZHE * 66
    assert encode_info(body) == SmsEncoding("UCS-2", 3, 134)
    assert encode_info(ZHE * 134).segments == 2
    assert encode_info(ZHE * 65 + GRIN + ZHE * 67) == SmsEncoding("UCS-2", 2, 134)


def test_r26_emoji_only_long_message_splits_on_whole_emoji() -> None:
    # 67-unit parts hold 33 emoji (66 units) each.
    assert encode_info(GRIN * 66) == SmsEncoding("UCS-2", 2, 132)
    assert encode_info(GRIN * 67) == SmsEncoding("UCS-2", 3, 134)


@given(gsm_text)
def test_r26_gsm_only_text_is_never_ucs2(body: str) -> None:
    assert encode_info(body).encoding == "GSM-7"


@given(gsm_basic_text)
def test_r26_gsm_basic_text_counts_one_septet_per_character(body: str) -> None:
    info = encode_info(body)
    assert info.units == len(body)
    expected = 1 if len(body) <= 160 else math.ceil(len(body) / 153)
    assert info.segments == expected


@given(st.text())
def test_r26_ucs2_units_are_utf16_code_units(body: str) -> None:
    info = encode_info(body)
    if info.encoding == "UCS-2":
        assert info.units == len(body.encode("utf-16-le")) // 2


@given(st.text(), st.characters())
def test_r26_segments_never_decrease_when_text_grows(body: str, extra: str) -> None:
    assert encode_info(body + extra).segments >= encode_info(body).segments


@given(st.text())
def test_r26_segments_hold_all_units(body: str) -> None:
    info = encode_info(body)
    single, part = (160, 153) if info.encoding == "GSM-7" else (70, 67)
    assert info.segments >= 1
    if info.units <= single:
        assert info.segments == 1
    else:
        assert info.segments >= math.ceil(info.units / part)
        # At most one unit is lost per part boundary to a character that moved whole.
        assert info.segments <= math.ceil(info.units / (part - 1))
