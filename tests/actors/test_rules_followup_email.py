"""R16: composition of the follow-up e-mail."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.brand import Account
from tidings.actors.followup_email import FollowupEmail, chat_link, compose

LINK = "https://support.acme.example/chat?session=tok123"
ALLOWED_TAGS = {"html", "head", "meta", "title", "body", "div", "p", "img", "h1", "strong", "a"}
MESSAGES = [
    ("inbound", "Hi, where is my order #1001?"),
    ("outbound", "Hi Ana! It shipped yesterday."),
    ("outbound", "Here is the tracking: https://track.example/1Z999"),
]


class Page(HTMLParser):
    """Collects the tags, attributes and text of an HTML body."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, name, value) for name, value in attrs]

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def hrefs(self) -> list[str | None]:
        return [value for tag, name, value in self.attrs if tag == "a" and name == "href"]

    def text(self) -> str:
        return "".join(self.data)


def page(email: FollowupEmail) -> Page:
    parser = Page()
    parser.feed(email.html)
    parser.close()
    return parser


def test_r16_subject_names_the_account() -> None:
    email = compose("Acme", LINK, MESSAGES)
    assert email.subject == "There's a new message from Acme"


def test_r16_subject_cannot_carry_header_breaks() -> None:
    email = compose("Acme\r\nBcc: victim@example.com", LINK, MESSAGES)
    assert "\r" not in email.subject and "\n" not in email.subject
    assert email.subject == "There's a new message from Acme Bcc: victim@example.com"


def test_r16_text_body_has_summary_and_link() -> None:
    email = compose("Acme", LINK, MESSAGES)
    assert email.text == (
        "There's a new message from Acme.\n"
        "\n"
        "You: Hi, where is my order #1001?\n"
        "Acme: Hi Ana! It shipped yesterday.\n"
        "Acme: Here is the tracking: https://track.example/1Z999\n"
        "\n"
        f"Continue the conversation: {LINK}\n"
    )


def test_r16_html_body_has_button_back_to_the_chat() -> None:
    parsed = page(compose("Acme", LINK, MESSAGES))
    assert parsed.hrefs() == [LINK]
    assert "View the conversation" in parsed.text()
    assert "display:inline-block" in compose("Acme", LINK, MESSAGES).html


def test_r16_html_body_has_the_summary() -> None:
    text = page(compose("Acme", LINK, MESSAGES)).text()
    assert "You: Hi, where is my order #1001?" in text
    assert "Acme: Hi Ana! It shipped yesterday." in text


def test_r16_logo_only_when_set() -> None:
    without = page(compose("Acme", LINK, MESSAGES))
    assert "img" not in without.tags
    with_logo = page(compose("Acme", LINK, MESSAGES, logo_url="https://cdn.example/logo.png"))
    assert with_logo.tags.count("img") == 1
    assert ("img", "src", "https://cdn.example/logo.png") in with_logo.attrs
    assert ("img", "alt", "Acme") in with_logo.attrs


def test_r16_privacy_and_terms_only_when_set() -> None:
    none = compose("Acme", LINK, MESSAGES)
    assert "Privacy" not in none.text and "Terms" not in none.text
    assert page(none).hrefs() == [LINK]

    privacy_only = compose("Acme", LINK, MESSAGES, privacy_url="https://acme.example/privacy")
    assert page(privacy_only).hrefs() == [LINK, "https://acme.example/privacy"]
    assert "Privacy policy: https://acme.example/privacy" in privacy_only.text
    assert "Terms" not in privacy_only.text

    both = compose(
        "Acme",
        LINK,
        MESSAGES,
        privacy_url="https://acme.example/privacy",
        terms_url="https://acme.example/terms",
    )
    assert page(both).hrefs() == [
        LINK,
        "https://acme.example/privacy",
        "https://acme.example/terms",
    ]
    assert both.text.endswith(
        "Privacy policy: https://acme.example/privacy\nTerms: https://acme.example/terms\n"
    )


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,x", "ftp://x.example/a", "  "]
)
def test_r16_non_web_urls_are_left_out(url: str) -> None:
    email = compose("Acme", LINK, MESSAGES, logo_url=url, privacy_url=url, terms_url=url)
    parsed = page(email)
    assert "img" not in parsed.tags
    assert parsed.hrefs() == [LINK]
    assert "javascript" not in email.html


def test_r16_summary_is_the_last_five_messages() -> None:
    messages = [("inbound" if i % 2 else "outbound", f"message {i}") for i in range(8)]
    email = compose("Acme", LINK, messages)
    for i in range(3):
        assert f"message {i}" not in email.text
        assert f"message {i}<" not in email.html
    for i in range(3, 8):
        assert f"message {i}" in email.text
        assert f"message {i}" in page(email).text()


def test_r16_long_messages_are_cut_to_about_200_characters() -> None:
    long = "x" * 500
    email = compose("Acme", LINK, [("outbound", long)])
    line = next(line for line in email.text.splitlines() if line.startswith("Acme: x"))
    excerpt = line.removeprefix("Acme: ")
    assert len(excerpt) == 200
    assert excerpt.endswith("\u2026")
    assert "x" * 200 not in email.html


def test_r16_a_200_character_message_is_not_cut() -> None:
    body = "y" * 200
    email = compose("Acme", LINK, [("inbound", body)])
    assert f"You: {body}\n" in email.text


def test_r16_message_line_breaks_become_spaces_in_the_summary() -> None:
    email = compose("Acme", LINK, [("outbound", "line one\n\nline two\r\n  three")])
    assert "Acme: line one line two three\n" in email.text


def test_r16_blank_messages_are_left_out_of_the_summary() -> None:
    email = compose("Acme", LINK, [("inbound", "hello"), ("outbound", "   ")])
    assert "Acme:" not in email.text
    assert "You: hello" in email.text


def test_r16_no_messages_still_composes() -> None:
    email = compose("Acme", LINK, [])
    assert email.subject == "There's a new message from Acme"
    assert LINK in email.text
    assert page(email).hrefs() == [LINK]


def test_r16_unknown_side_is_refused() -> None:
    with pytest.raises(ValueError, match="side"):
        compose("Acme", LINK, [("agent", "hi")])


def test_r16_user_text_is_escaped_in_html() -> None:
    evil = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    email = compose(
        '"Acme" <b>Shop</b>',
        LINK + '"&x=<y>',
        [("inbound", evil), ("outbound", evil)],
        logo_url='https://cdn.example/logo.png?a="><script>',
        privacy_url="https://acme.example/p?a=1&b=2",
    )
    assert "<script" not in email.html
    assert "<b>" not in email.html
    parsed = page(email)
    assert set(parsed.tags) <= ALLOWED_TAGS
    assert parsed.tags.count("img") == 1
    assert evil in parsed.text()
    assert ("img", "src", 'https://cdn.example/logo.png?a="><script>') in parsed.attrs
    assert parsed.hrefs() == [LINK + '"&x=<y>', "https://acme.example/p?a=1&b=2"]
    # The plain-text body is not escaped.
    assert f"You: {evil}" in email.text


def test_r16_chat_link_form() -> None:
    assert chat_link("https://support.acme.example/chat", "tok123") == LINK
    assert chat_link("https://support.acme.example/chat/", "tok123") == LINK
    assert (
        chat_link("http://127.0.0.1:8080/chat", "a/b+c=")
        == "http://127.0.0.1:8080/chat?session=a%2Fb%2Bc%3D"
    )


def test_r16_chat_link_goes_to_page_url_else_public_url_chat() -> None:
    default = Account(public_url="https://support.acme.example/")
    assert chat_link(default.chat_page(), "tok123") == LINK
    brand = Account(
        public_url="https://support.acme.example", chat_page_url="https://shop.acme.example/help"
    )
    assert chat_link(brand.chat_page(), "tok123") == "https://shop.acme.example/help?session=tok123"


def test_r16_email_is_frozen() -> None:
    email = compose("Acme", LINK, MESSAGES)
    with pytest.raises(AttributeError):
        email.subject = "other"  # type: ignore[misc]


@given(
    st.text(max_size=40),
    st.lists(
        st.tuples(st.sampled_from(["inbound", "outbound"]), st.text(max_size=300)), max_size=8
    ),
    st.text(max_size=40),
)
def test_r16_any_user_text_stays_text(
    name: str, messages: list[tuple[str, str]], logo: str
) -> None:
    email = compose(name, LINK, messages, logo_url="https://cdn.example/" + logo)
    parsed = page(email)
    assert set(parsed.tags) <= ALLOWED_TAGS
    assert parsed.tags.count("a") == 1
    assert parsed.tags.count("img") == 1
    assert "\n" not in email.subject and "\r" not in email.subject
