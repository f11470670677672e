"""R17: link shortening in outbound SMS."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.links import (
    CODE_LENGTH,
    Link,
    find_links,
    link_code,
    message_link_codes,
    short_link,
    shorten,
)
from tidings.actors.segments import encode_info

BASE = "https://support.acme.example"
SECRET = b"test-secret"


def urls(text: str) -> list[str]:
    return [link.url for link in find_links(text)]


def counting_codes() -> tuple[list[str], Callable[[str], str]]:
    seen: list[str] = []

    def make(url: str) -> str:
        seen.append(url)
        return f"c{len(seen)}"

    return seen, make


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Track it at https://shop.example/t/123", ["https://shop.example/t/123"]),
        ("Track it at https://shop.example/t/123.", ["https://shop.example/t/123"]),
        (
            "See https://a.example, then https://b.example!",
            ["https://a.example", "https://b.example"],
        ),
        ("(see https://a.example/x)", ["https://a.example/x"]),
        ("[https://a.example/x]", ["https://a.example/x"]),
        (
            "https://en.wikipedia.org/wiki/Mercury_(planet)",
            ["https://en.wikipedia.org/wiki/Mercury_(planet)"],
        ),
        (
            "(https://en.wikipedia.org/wiki/Mercury_(planet))",
            ["https://en.wikipedia.org/wiki/Mercury_(planet)"],
        ),
        ("Go: http://x.example/a?b=1&c=2#frag;", ["http://x.example/a?b=1&c=2#frag"]),
        ("HTTPS://SHOP.EXAMPLE/SALE?", ["HTTPS://SHOP.EXAMPLE/SALE"]),
        ("'https://a.example/q'", ["https://a.example/q"]),
        ("\u201chttps://a.example/q\u201d", ["https://a.example/q"]),
        ("<https://a.example/q>", ["https://a.example/q"]),
        ('<a href="https://a.example/q">', ["https://a.example/q"]),
        ("line one\nhttps://a.example/q\nline three", ["https://a.example/q"]),
        ("https://a.example/q...", ["https://a.example/q"]),
        ("https://127.0.0.1:8080/x", ["https://127.0.0.1:8080/x"]),
        ("https://ex.example/caf\u00e9", ["https://ex.example/caf\u00e9"]),
        ("https://a.example/path/", ["https://a.example/path/"]),
    ],
)
def test_r17_finds_links_without_trailing_punctuation(text: str, expected: list[str]) -> None:
    assert urls(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "no links here",
        "www.example.com is not a link without a scheme",
        "ftp://files.example/x",
        "mailto:someone@example.com",
        "http://",
        "https:// example.com",
        "https://...",
        "xhttps://a.example",
        "user@https://a.example",
    ],
)
def test_r17_text_without_http_links_has_none(text: str) -> None:
    assert find_links(text) == []


def test_r17_link_positions_slice_the_text() -> None:
    text = "Hi! Visit https://a.example/x. Or (https://b.example)."
    links = find_links(text)
    assert links == [
        Link("https://a.example/x", 10, 29),
        Link("https://b.example", 35, 52),
    ]
    for link in links:
        assert text[link.start : link.end] == link.url


def test_r17_short_link_form() -> None:
    assert short_link(BASE, "abc") == "https://support.acme.example/l/abc"
    assert short_link(BASE + "/", "abc") == "https://support.acme.example/l/abc"


def test_r17_shorten_replaces_links_and_keeps_the_punctuation() -> None:
    seen, make = counting_codes()
    text = "Your order: https://shop.example/orders/12345?utm=sms. Questions? (https://shop.example/help)"
    new_text, pairs = shorten(text, make, BASE)
    assert new_text == f"Your order: {BASE}/l/c1. Questions? ({BASE}/l/c2)"
    assert pairs == [
        ("c1", "https://shop.example/orders/12345?utm=sms"),
        ("c2", "https://shop.example/help"),
    ]
    assert seen == [url for _, url in pairs]


def test_r17_same_url_twice_gets_one_code() -> None:
    seen, make = counting_codes()
    new_text, pairs = shorten("https://a.example/x and https://a.example/x", make, BASE)
    assert new_text == f"{BASE}/l/c1 and {BASE}/l/c1"
    assert pairs == [("c1", "https://a.example/x")]
    assert seen == ["https://a.example/x"]


def test_r17_text_without_links_is_unchanged() -> None:
    seen, make = counting_codes()
    assert shorten("Thanks, see you soon!", make, BASE) == ("Thanks, see you soon!", [])
    assert seen == []


def test_r17_existing_short_links_are_not_shortened_again() -> None:
    seen, make = counting_codes()
    text = f"Already short: {BASE}/l/Ab12Cd34 and new https://a.example/long/path"
    new_text, pairs = shorten(text, make, BASE)
    assert new_text == f"Already short: {BASE}/l/Ab12Cd34 and new {BASE}/l/c1"
    assert pairs == [("c1", "https://a.example/long/path")]


def test_r17_shortening_a_long_link_saves_segments() -> None:
    long_url = "https://shop.example/products/very-long-product-name?" + "&".join(
        f"utm_param_{i}=value_{i}" for i in range(8)
    )
    text = "Hi Ana, your item is back in stock: " + long_url + " Reply STOP to opt out."
    new_text, _ = shorten(text, message_link_codes(SECRET, "m1"), BASE)
    assert encode_info(new_text).segments < encode_info(text).segments


def test_r17_link_code_is_stable_short_base62() -> None:
    code = link_code(SECRET, "msg-1", 0)
    assert code == link_code(SECRET, "msg-1", 0)
    assert len(code) == CODE_LENGTH
    assert re.fullmatch(r"[0-9A-Za-z]{8}", code)


def test_r17_link_code_differs_by_secret_message_and_index() -> None:
    codes = {
        link_code(SECRET, "msg-1", 0),
        link_code(SECRET, "msg-1", 1),
        link_code(SECRET, "msg-2", 0),
        link_code(b"other-secret", "msg-1", 0),
        # The separator keeps ("msg-1", 10) apart from ("msg-11", 0).
        link_code(SECRET, "msg-11", 0),
        link_code(SECRET, "msg-1", 10),
    }
    assert len(codes) == 6


def test_r17_link_code_known_value() -> None:
    # Pinned so that a refactor cannot silently change codes already handed out.
    assert link_code(b"k", "m", 0) == "fGYJVbNV"


def test_r17_message_link_codes_number_links_in_order() -> None:
    make = message_link_codes(SECRET, "msg-9")
    new_text, pairs = shorten("https://a.example https://b.example https://a.example", make, BASE)
    assert pairs == [
        (link_code(SECRET, "msg-9", 0), "https://a.example"),
        (link_code(SECRET, "msg-9", 1), "https://b.example"),
    ]
    assert new_text.count("/l/") == 3
    # The same message shortened again gives the same text (a retried send is stable).
    again, _ = shorten(
        "https://a.example https://b.example https://a.example",
        message_link_codes(SECRET, "msg-9"),
        BASE,
    )
    assert again == new_text


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80))
def test_r17_text_without_scheme_is_untouched(text: str) -> None:
    if "://" in text:
        return
    assert shorten(text, lambda url: "x", BASE) == (text, [])


@given(
    st.lists(
        st.one_of(
            st.from_regex(r"https?://[a-z]{1,10}\.example(/[a-z0-9_]{0,8}){0,3}", fullmatch=True),
            st.text(alphabet="abc ,.!?()\n", max_size=12),
        ),
        max_size=6,
    )
)
def test_r17_every_found_link_is_replaced(pieces: list[str]) -> None:
    text = " ".join(pieces)
    new_text, pairs = shorten(text, message_link_codes(SECRET, "m"), BASE)
    for link in find_links(new_text):
        assert link.url.startswith(f"{BASE}/l/")
    assert len(pairs) == len({link.url for link in find_links(text)})
