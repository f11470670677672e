"""Search (contract v3, "Team workflow"): `messages.search` and `profiles.search` over the
store's text indexes (what is in them: `searchable`).

A word is letters and digits, compared without case or accents (`engine.store.text`);
a query finds what has every one of its words, never part of a word. Reads the store
directly, as `listing` does: every index entry is committed with its record.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from tidings.actors.errors import bad_request
from tidings.actors.listing import decode_cursor, encode_cursor
from tidings.actors.model import Message, Profile, StoredMessage
from tidings.actors.searchable import MESSAGES, PROFILES
from tidings.engine import Store
from tidings.engine.store.text import words

MESSAGES_LIMIT: Final = 50  # messages.search `limit`: at most this, 20 by default
PROFILES_FOUND: Final = 20  # profiles.search answers at most this many
QUERY_LIMIT: Final = 500  # characters of `q`; a longer one is bad_request
_PHONE: Final = re.compile(r"^[+\d\s().-]+$")


class ProfileBrief(msgspec.Struct):
    """Who a found message is from or to."""

    id: str
    name: str | None
    phone: str | None
    email: str | None


class MessageFound(msgspec.Struct):
    """One result of `messages.search`."""

    message: Message
    profile: ProfileBrief


class MessagePage(msgspec.Struct):
    """A page of `messages.search`; `cursor` asks for the next one."""

    results: list[MessageFound]
    cursor: str | None


class _ProfileRecord(msgspec.Struct):
    profile: Profile


_decode_message = msgspec.json.Decoder(StoredMessage).decode
_decode_profile = msgspec.json.Decoder(_ProfileRecord).decode


def _query(q: str) -> str:
    """`q`, checked: bad_request when too long or without a word."""
    if len(q) > QUERY_LIMIT:
        raise bad_request("q", f"must be at most {QUERY_LIMIT} characters")
    if not words(q):
        raise bad_request("q", "must contain a word (letters or digits)")
    return q


async def messages(store: Store, q: str, limit: int = 20, cursor: str | None = None) -> MessagePage:
    """Messages whose body has every word of `q`, newest first, a page at a time."""
    q = _query(q)
    if not 1 <= limit <= MESSAGES_LIMIT:
        raise bad_request("limit", f"must be 1 to {MESSAGES_LIMIT}")
    after = decode_cursor(cursor) if cursor is not None else None
    rows = await store.text_query(MESSAGES, q, limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    raws = await store.get_many([f"msg:{member}" for member, _ in rows])
    found = [_decode_message(raw).message for raw in raws if raw]
    owners = list(dict.fromkeys(m.profile for m in found))
    briefs: dict[str, ProfileBrief] = {}
    for owner, raw in zip(owners, await store.get_many([f"profile:{p}" for p in owners]), strict=True):
        profile = _decode_profile(raw).profile if raw else Profile(owner)
        briefs[owner] = ProfileBrief(profile.id, profile.name, profile.phone, profile.email)
    next_cursor = encode_cursor(rows[-1][1], rows[-1][0]) if more else None
    return MessagePage([MessageFound(m, briefs[m.profile]) for m in found], next_cursor)


async def profile_ids(store: Store, q: str) -> list[str]:
    """The ids of up to `PROFILES_FOUND` profiles whose name, e-mail and phone hold every
    word of `q`. A `q` that is a phone number written with spaces, dashes or brackets
    is looked up as its digits, as a profile's phone is stored."""
    q = _query(q)
    if _PHONE.match(q) and sum(c.isdigit() for c in q) >= 7:
        q = "".join(c for c in q if c.isdigit())
    return [member for member, _ in await store.text_query(PROFILES, q, PROFILES_FOUND)]
