"""SMS compliance keywords (R19): which inbound messages are opt-out, opt-in or help
requests, and the default replies the brand sends to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KeywordKind = Literal["opt_out", "opt_in", "help"]

OPT_OUT_WORDS: frozenset[str] = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
"""Keywords that withdraw SMS consent."""

OPT_IN_WORDS: frozenset[str] = frozenset({"START", "JOIN", "YES", "UNSTOP"})
"""Keywords that give SMS consent."""

HELP_WORDS: frozenset[str] = frozenset({"HELP", "INFO"})
"""Keywords that ask for the help reply."""

OPT_OUT_REPLY = (
    "{{ organization_prefix }}: You are unsubscribed and will receive no further "
    "messages. Reply START to resubscribe."
)
"""Default confirmation sent after an opt-out keyword (a template, R20 fields)."""

OPT_IN_REPLY = (
    "{{ organization_prefix }}: You are subscribed to messages again. "
    "Msg&data rates may apply. Reply HELP for help, STOP to opt out."
)
"""Default confirmation sent after an opt-in keyword (a template, R20 fields)."""

HELP_REPLY = (
    "{{ organization_prefix }}: For help, email {{ support_email }}. "
    "Msg&data rates may apply. Reply STOP to opt out."
)
"""Default reply to a help keyword (a template, R20 fields)."""

_KIND_OF_WORD: dict[str, KeywordKind] = {
    **{word: "opt_out" for word in OPT_OUT_WORDS},
    **{word: "opt_in" for word in OPT_IN_WORDS},
    **{word: "help" for word in HELP_WORDS},
}

_DEFAULT_REPLIES: dict[KeywordKind, str] = {
    "opt_out": OPT_OUT_REPLY,
    "opt_in": OPT_IN_REPLY,
    "help": HELP_REPLY,
}


@dataclass(slots=True, frozen=True)
class Keyword:
    """A recognised keyword: what it asks for (`kind`) and the keyword itself, upper-case."""

    kind: KeywordKind
    word: str


def classify(body: str) -> Keyword | None:
    """The keyword an inbound SMS body is, or None when it is not exactly one keyword.

    Case does not matter and surrounding whitespace is trimmed; anything else around the
    word (`STOP PLEASE`, `stop.`) makes it an ordinary message.
    """
    word = body.strip()
    # Only ASCII letters can spell a keyword: str.upper() would otherwise turn look-alikes
    # such as the long s in "ſtop" into a real keyword.
    if not word.isascii():
        return None
    word = word.upper()
    kind = _KIND_OF_WORD.get(word)
    if kind is None:
        return None
    return Keyword(kind=kind, word=word)


def default_reply(kind: KeywordKind) -> str:
    """The default reply template for a keyword kind (render it with `templates.Template`)."""
    return _DEFAULT_REPLIES[kind]
