"""X-Twilio-Signature, checked against the `twilio` package's own RequestValidator."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict
from starlette.datastructures import FormData
from twilio.request_validator import RequestValidator

from tidings.transports.twilio_signature import compute_signature, is_valid

TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="  # Twilio's documented example


def oracle(token: str, url: str, pairs: list[tuple[str, str]]) -> str:
    """What twilio's RequestValidator computes for these form pairs."""
    return RequestValidator(token).compute_signature(url, MultiDict(pairs))


def test_documented_example() -> None:
    assert compute_signature(TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert compute_signature(TOKEN, DOC_URL, list(DOC_PARAMS.items())) == DOC_SIGNATURE
    assert is_valid(TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


SMS_WEBHOOK = [
    ("ToCountry", "US"),
    ("SmsMessageSid", "SM0123"),
    ("NumMedia", "2"),
    ("MediaUrl0", "https://api.twilio.com/media/1"),
    ("MediaContentType0", "image/jpeg"),
    ("MediaUrl1", "https://api.twilio.com/media/2"),
    ("MediaContentType1", "video/mp4"),
    ("Body", "Ciao, è arrivato il mio ordine? 📦 ñ 中文"),
    ("From", "+393331234567"),
    ("To", "+15550001111"),
    ("MessageSid", "SM0123"),
    ("AccountSid", "AC1"),
    ("AddOns", '{"status":"successful","results":{}}'),
]


@pytest.mark.parametrize(
    ("url", "pairs"),
    [
        ("https://support.acme.example/sms/inbound", []),
        ("https://support.acme.example/sms/inbound", SMS_WEBHOOK),
        ("http://127.0.0.1:8080/sms/inbound", SMS_WEBHOOK),
        ("https://acme.example/sms/inbound?tenant=acme&b=2&a=1", SMS_WEBHOOK),
        ("https://acme.example/sms/inbound?q=%C3%A8+x", [("Body", "")]),
        (
            "https://acme.example/sms/status",
            [("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("ErrorCode", "")],
        ),
        # repeated names: values sorted within the name, whatever order they came in
        ("https://acme.example/x", [("b", "2"), ("a", "z"), ("a", "y"), ("a", "x")]),
        ("https://acme.example/x", [("a", "x"), ("a", "y"), ("a", "z"), ("b", "2")]),
        # prefixes: "Reason" sorts before "ReasonConferenceEnded"
        ("https://acme.example/x", [("ReasonConferenceEnded", "p"), ("Reason", "Participant")]),
        # case-sensitive, code point order: "B" < "a" < "é"
        ("https://acme.example/x", [("a", "1"), ("B", "2"), ("é", "3"), ("Z", "4")]),
        ("https://acme.example/x", [("emoji", "😀"), ("emoji", "😁"), ("emoji", "a")]),
        ("https://acme.example/x", [("k", "v"), ("k", "v")]),  # the same pair twice
        ("https://acme.example/x", [("empty", ""), ("", "no name")]),
    ],
)
def test_signature_equals_twilio_request_validator(url: str, pairs: list[tuple[str, str]]) -> None:
    expected = oracle(TOKEN, url, pairs)
    assert compute_signature(TOKEN, url, pairs) == expected
    assert compute_signature(TOKEN, url, MultiDict(pairs)) == expected
    assert compute_signature(TOKEN, url, FormData(pairs)) == expected
    assert is_valid(TOKEN, url, pairs, expected)
    assert RequestValidator(TOKEN).validate(
        url, MultiDict(pairs), compute_signature(TOKEN, url, pairs)
    )


def test_order_of_repeated_values_does_not_matter() -> None:
    a = compute_signature(TOKEN, "https://x/y", [("m", "2"), ("m", "1")])
    b = compute_signature(TOKEN, "https://x/y", [("m", "1"), ("m", "2")])
    assert a == b


def test_dict_of_lists_is_the_same_as_repeated_pairs() -> None:
    pairs = [("m", "2"), ("m", "1"), ("n", "x")]
    assert compute_signature(
        TOKEN, "https://x/y", {"m": ["2", "1"], "n": "x"}
    ) == compute_signature(TOKEN, "https://x/y", pairs)


def test_unicode_token_matches_twilio() -> None:
    token = "tökén-😀"
    assert compute_signature(token, DOC_URL, DOC_PARAMS) == oracle(
        token, DOC_URL, list(DOC_PARAMS.items())
    )


@pytest.mark.parametrize(
    ("signed_url", "checked_url"),
    [
        ("https://acme.example:443/sms/inbound", "https://acme.example/sms/inbound"),
        ("https://acme.example/sms/inbound", "https://acme.example:443/sms/inbound"),
        ("http://acme.example:80/sms/inbound?a=1", "http://acme.example/sms/inbound?a=1"),
        ("http://127.0.0.1/sms/inbound", "http://127.0.0.1:8080/sms/inbound"),
    ],
)
def test_port_or_no_port_is_accepted_like_twilio(signed_url: str, checked_url: str) -> None:
    signature = compute_signature(TOKEN, signed_url, SMS_WEBHOOK)
    assert RequestValidator(TOKEN).validate(checked_url, MultiDict(SMS_WEBHOOK), signature)
    assert is_valid(TOKEN, checked_url, SMS_WEBHOOK, signature)


def test_ipv6_host_with_port() -> None:
    signature = compute_signature(TOKEN, "http://[::1]/sms/inbound", [("a", "b")])
    assert is_valid(TOKEN, "http://[::1]:8080/sms/inbound", [("a", "b")], signature)


@pytest.mark.parametrize(
    ("token", "url", "pairs", "signature"),
    [
        ("other", DOC_URL, list(DOC_PARAMS.items()), DOC_SIGNATURE),
        (TOKEN, DOC_URL.replace("foo=1", "foo=2"), list(DOC_PARAMS.items()), DOC_SIGNATURE),
        (TOKEN, DOC_URL.replace("https", "http"), list(DOC_PARAMS.items()), DOC_SIGNATURE),
        (TOKEN, DOC_URL, [*DOC_PARAMS.items(), ("Body", "injected")], DOC_SIGNATURE),
        (TOKEN, DOC_URL, [(k, v) for k, v in DOC_PARAMS.items() if k != "Digits"], DOC_SIGNATURE),
        (TOKEN, DOC_URL, list(DOC_PARAMS.items()), DOC_SIGNATURE[:-2]),
        (TOKEN, DOC_URL, list(DOC_PARAMS.items()), ""),
        (TOKEN, DOC_URL, list(DOC_PARAMS.items()), None),
        (TOKEN, DOC_URL, list(DOC_PARAMS.items()), "ÄÖÜ"),
    ],
)
def test_bad_or_missing_signature_is_refused(
    token: str, url: str, pairs: list[tuple[str, str]], signature: str | None
) -> None:
    assert not is_valid(token, url, pairs, signature)
    if signature is not None:
        assert not RequestValidator(token).validate(url, MultiDict(pairs), signature)


def test_names_and_values_are_joined_without_delimiters_like_twilio() -> None:
    # A property of Twilio's scheme, kept for compatibility: "ab"+"c" signs like "a"+"bc".
    joined = compute_signature(TOKEN, "https://x/", [("ab", "c")])
    assert joined == compute_signature(TOKEN, "https://x/", [("a", "bc")])
    assert joined == oracle(TOKEN, "https://x/", [("a", "bc")])


names = st.text(min_size=0, max_size=8)
values = st.text(max_size=20)
pair_lists = st.lists(st.tuples(names, values), max_size=12)
# repeated names on purpose: draw names from a small pool too
pooled_pairs = st.lists(
    st.tuples(st.sampled_from(["a", "A", "MediaUrl", "Body", "é"]), values), max_size=12
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(st.sampled_from(["acme.example", "127.0.0.1", "support.acme.example", "[::1]"]))
    port = draw(st.sampled_from(["", ":80", ":443", ":8080", ":0"]))
    path = draw(st.sampled_from(["/sms/inbound", "/sms/status", "/", "/a/b%20c"]))
    query = draw(st.lists(st.tuples(names, values), max_size=3))
    return f"{scheme}://{host}{port}{path}" + (f"?{urlencode(query)}" if query else "")


@given(
    token=st.text(min_size=1, max_size=32), url=urls(), pairs=st.one_of(pair_lists, pooled_pairs)
)
def test_hypothesis_agrees_with_twilio(token: str, url: str, pairs: list[tuple[str, str]]) -> None:
    validator = RequestValidator(token)
    expected = validator.compute_signature(url, MultiDict(pairs))
    assert compute_signature(token, url, pairs) == expected
    assert is_valid(token, url, pairs, expected)
    assert validator.validate(url, MultiDict(pairs), expected)
    # and a signature for other parameters is refused by both
    other = [*pairs, ("Injected", "1")]
    assert not is_valid(token, url, other, expected)
    assert not validator.validate(url, MultiDict(other), expected)
