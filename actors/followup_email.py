"""The follow-up e-mail to a web chat visitor who went offline while an agent answered
(R16): its subject, plain-text and HTML bodies. Composition only; nothing is sent here."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

SUMMARY_MESSAGES = 5
"""How many of the latest messages the summary shows."""

SUMMARY_CHARS = 200
"""How long one message may be in the summary before it is cut."""

_WHITESPACE = re.compile(r"\s+")


@dataclass(slots=True, frozen=True)
class FollowupEmail:
    """A composed follow-up e-mail: subject, plain-text body and HTML body."""

    subject: str
    text: str
    html: str


def chat_link(page_url: str, session: str) -> str:
    """The link back to a web chat conversation: `{page_url}?session=<token>`, where
    `page_url` is the page hosting the widget (`Account.chat_page`; config refuses a
    `chat.page_url` with a query or fragment, so the link is always this form)."""
    return f"{page_url.rstrip('/')}?session={quote(session, safe='')}"


def _web_url(url: str) -> str:
    """The URL when it is an http(s) link, else empty (so nothing else ends up in an href)."""
    url = url.strip()
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return ""
    return url if scheme in ("http", "https") else ""


def _one_line(text: str) -> str:
    """Text on one line: line breaks and runs of whitespace become one space."""
    return _WHITESPACE.sub(" ", text).strip()


def _excerpt(body: str) -> str:
    """A message body for the summary: one line, cut to about SUMMARY_CHARS characters."""
    line = _one_line(body)
    if len(line) <= SUMMARY_CHARS:
        return line
    return line[: SUMMARY_CHARS - 1].rstrip() + "\u2026"


def _author(side: str, account_name: str) -> str:
    if side == "outbound":
        return account_name
    if side == "inbound":
        return "You"
    raise ValueError(f"side: {side!r} is neither inbound nor outbound")


def compose(
    account_name: str,
    link: str,
    messages: Sequence[tuple[str, str]],
    *,
    logo_url: str = "",
    privacy_url: str = "",
    terms_url: str = "",
) -> FollowupEmail:
    """The follow-up e-mail for a visitor of `account_name`'s web chat.

    `messages` are `(side, body)` pairs, oldest first, where side is the message
    direction: `outbound` (the brand, shown under the account name) or `inbound` (the
    visitor, shown as "You"). The summary shows the last five with text, each on one
    line and cut to about 200 characters. `link` (see `chat_link`) is the button back to
    the chat. The logo, privacy and terms links appear only when set to an http(s) URL.
    All text is HTML-escaped in the HTML body.
    """
    name = _one_line(account_name)
    subject = f"There's a new message from {name}"
    summary = [(_author(side, name), _excerpt(body)) for side, body in messages if body.strip()][
        -SUMMARY_MESSAGES:
    ]
    logo, privacy, terms = _web_url(logo_url), _web_url(privacy_url), _web_url(terms_url)
    footer = [(label, url) for label, url in (("Privacy policy", privacy), ("Terms", terms)) if url]

    text_lines = [f"{subject}.", ""]
    text_lines += [f"{author}: {body}" for author, body in summary]
    text_lines += ["", f"Continue the conversation: {link}"]
    if footer:
        text_lines += [""] + [f"{label}: {url}" for label, url in footer]
    text = "\n".join(text_lines) + "\n"

    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{e(subject)}</title></head>",
        '<body style="margin:0;padding:24px;background:#f4f4f5;'
        'font-family:Helvetica,Arial,sans-serif;color:#18181b">',
        '<div style="max-width:560px;margin:0 auto;background:#ffffff;'
        'border-radius:8px;padding:24px">',
    ]
    if logo:
        parts.append(
            f'<p><img src="{e(logo)}" alt="{e(name)}" style="max-height:48px;max-width:200px"></p>'
        )
    parts.append(f'<h1 style="font-size:20px;margin:0 0 16px">{e(subject)}</h1>')
    if summary:
        parts.append('<div style="border-left:3px solid #e4e4e7;padding-left:12px">')
        parts += [
            f'<p style="margin:0 0 8px"><strong>{e(author)}:</strong> {e(body)}</p>'
            for author, body in summary
        ]
        parts.append("</div>")
    parts.append(
        f'<p style="margin:24px 0"><a href="{e(link)}" style="display:inline-block;'
        "padding:12px 24px;background:#18181b;color:#ffffff;text-decoration:none;"
        'border-radius:6px;font-weight:bold">View the conversation</a></p>'
    )
    if footer:
        links = " &middot; ".join(
            f'<a href="{e(url)}" style="color:#71717a">{e(label)}</a>' for label, url in footer
        )
        parts.append(f'<p style="font-size:12px;color:#71717a">{links}</p>')
    parts.append("</div></body></html>")
    return FollowupEmail(subject=subject, text=text, html="\n".join(parts) + "\n")
