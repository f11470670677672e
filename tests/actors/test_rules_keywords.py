"""R19: inbound SMS keywords."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.keywords import (
    HELP_REPLY,
    HELP_WORDS,
    OPT_IN_REPLY,
    OPT_IN_WORDS,
    OPT_OUT_REPLY,
    OPT_OUT_WORDS,
    Keyword,
    classify,
    default_reply,
)

ALL_WORDS = OPT_OUT_WORDS | OPT_IN_WORDS | HELP_WORDS


@pytest.mark.parametrize(
    "word", ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]
)
def test_r19_opt_out_keywords(word: str) -> None:
    assert classify(word) == Keyword("opt_out", word)


@pytest.mark.parametrize("word", ["START", "JOIN", "YES", "UNSTOP"])
def test_r19_opt_in_keywords(word: str) -> None:
    assert classify(word) == Keyword("opt_in", word)


@pytest.mark.parametrize("word", ["HELP", "INFO"])
def test_r19_help_keywords(word: str) -> None:
    assert classify(word) == Keyword("help", word)


def test_r19_keyword_lists_are_exactly_the_spec() -> None:
    assert len(ALL_WORDS) == 14
    assert OPT_OUT_WORDS.isdisjoint(OPT_IN_WORDS)
    assert HELP_WORDS.isdisjoint(OPT_OUT_WORDS | OPT_IN_WORDS)


@pytest.mark.parametrize("body", ["stop", "Stop", "sToP", "StopAll", "unstop", "Help"])
def test_r19_keywords_are_case_insensitive(body: str) -> None:
    result = classify(body)
    assert result is not None
    assert result.word == body.upper()


@pytest.mark.parametrize("body", ["  STOP", "STOP  ", "\tstop\n", "\r\n start \r\n", "\u00a0HELP"])
def test_r19_surrounding_whitespace_is_trimmed(body: str) -> None:
    assert classify(body) is not None


@pytest.mark.parametrize(
    "body",
    [
        "STOP PLEASE",
        "stop.",
        "STOP!",
        "please stop",
        "S T O P",
        "STOPP",
        "",
        "   ",
        "STOP STOP",
        "'STOP'",
        "yes please",
        "help me",
        "STOP\u200b",
    ],
)
def test_r19_stop_please_is_not_a_keyword(body: str) -> None:
    assert classify(body) is None


def test_r19_unicode_look_alikes_are_not_keywords() -> None:
    # U+017F LATIN SMALL LETTER LONG S upper-cases to "S".
    assert "\u017ftop".upper() == "STOP"
    assert classify("\u017ftop") is None
    # Cyrillic "ЅТОР" looks like STOP.
    assert classify("\u0405\u0422\u041e\u0420") is None


@given(
    st.sampled_from(sorted(ALL_WORDS)),
    st.text(alphabet=" \t\r\n", max_size=4),
    st.text(alphabet=" \t\r\n", max_size=4),
    st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_r19_any_casing_and_padding_of_a_keyword_is_that_keyword(
    word: str, before: str, after: str, upper: list[bool]
) -> None:
    cased = "".join(c.upper() if u else c.lower() for c, u in zip(word, upper, strict=False))
    cased += word[len(upper) :].lower()
    result = classify(before + cased + after)
    assert result is not None
    assert result.word == word


@given(st.text())
def test_r19_a_keyword_result_always_names_a_listed_word(body: str) -> None:
    result = classify(body)
    if result is not None:
        assert result.word in ALL_WORDS
        assert body.strip().upper() == result.word


def test_r19_default_replies_are_templates_with_the_organization_prefix() -> None:
    assert default_reply("opt_out") == OPT_OUT_REPLY
    assert default_reply("opt_in") == OPT_IN_REPLY
    assert default_reply("help") == HELP_REPLY
    for text in (OPT_OUT_REPLY, OPT_IN_REPLY, HELP_REPLY):
        assert text.startswith("{{ organization_prefix }}: ")
    assert "START" in OPT_OUT_REPLY
    assert "STOP" in OPT_IN_REPLY
    assert "{{ support_email }}" in HELP_REPLY
