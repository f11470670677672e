"""Schema versions of the stores, and what the migrations between them change.

Every store records the version of its layout (SQLite: table ``meta``, Redis: key
``{prefix}meta:schema_version``; a memory store is always new). On open, a store of an
older version is migrated one step at a time (N → N+1, each step in the store's own
transaction or atomic unit, so a crash between steps leaves a store of version N+1 and
the next open goes on from there); a store written by a newer release is refused with
`SchemaTooNew`, before anything is written.

Versions:

1. The layout before versions were recorded (a store without a version is version 1).
   Durable timers named their message ``"<actor kind>/<class name>"``.
2. Durable timers name their message by its msgspec tag (``"ticket.wake"``), so a class
   may be renamed; migration 1 → 2 rewrites the v1 names of pending timers.
3. Text indexes (`Batch.index_text`, `Store.text_query`). Migration 2 → 3 indexes what
   version 2 stored as the inbox (actors/searchable.py) indexes it from version 3 on:
   every message (``msg:{id}``) by its body, scored by its creation time, except the
   web chat messages of blocked profiles (kept in ``thread:webchat-blocked:`` logs,
   shown nowhere), and every profile (``profile:{id}``) by name, e-mail and phone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

from tidings.engine.store.base import Batch, StoreError

SCHEMA_VERSION: Final = 3
"""The layout this release writes, and the newest it reads."""

# The durable timer messages that existed at version 1, by their v1 name, and their tags
# (actors/ticket.py). Frozen history: a message added later never had a v1 name.
V1_TIMER_TAGS: Final = {
    "ticket/Wake": "ticket.wake",
    "ticket/FollowupDue": "ticket.followup_due",
    "ticket/ScheduledSend": "ticket.scheduled_send",
}

_envelope = msgspec.msgpack.Decoder(tuple[str, str, str, msgspec.Raw])
_encoder = msgspec.msgpack.Encoder()


class SchemaTooNew(StoreError):
    """The store was written by a newer release than this one; it is left untouched."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"written by schema version {found}, this release reads up to {SCHEMA_VERSION}"
        )
        self.found = found


def check_readable(found: int) -> None:
    """Raise `SchemaTooNew` if a store of version `found` is newer than this release."""
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(found)


def timer_payload_v2(payload: bytes) -> bytes | None:
    """Migration 1 → 2 of one durable timer payload: the payload with the message's tag
    in place of its v1 name, or None when it needs no change (already a tag, or not a
    timer envelope this migration knows; the timer service dead-letters those)."""
    try:
        kind, key, name, raw = _envelope.decode(payload)
    except msgspec.DecodeError:
        return None
    tag = V1_TIMER_TAGS.get(name)
    if tag is None:
        return None
    # The v1 message is the same fields without the tag, which decodes as the tagged type.
    return _encoder.encode((kind, key, tag, raw))


# The records version 2 stored that version 3 indexes, as far as the index reads them, and
# the text index names (actors/searchable.py). Frozen history, like V1_TIMER_TAGS.
V3_MESSAGES: Final = "messages"
V3_PROFILES: Final = "profiles"
V3_BLOCKED_THREADS: Final = "thread:webchat-blocked:"


class _MessageV2(msgspec.Struct):
    id: str
    body: str
    created_at: str


class _StoredMessageV2(msgspec.Struct):
    message: _MessageV2


class _ProfileV2(msgspec.Struct):
    id: str
    phone: str | None = None
    email: str | None = None
    name: str | None = None


class _ProfileStateV2(msgspec.Struct):
    profile: _ProfileV2


_message_v2 = msgspec.json.Decoder(_StoredMessageV2)
_profile_v2 = msgspec.json.Decoder(_ProfileStateV2)


def index_text_v3(batch: Batch, key: str, value: bytes, blocked: frozenset[str]) -> None:
    """Migration 2 → 3 of one record: index it into `batch` when it is a message (not in
    `blocked`, the ids in blocked profiles' web chat logs) or a profile; a record that
    does not decode is left out (nothing was ever found by it)."""
    try:
        if key.startswith("msg:") and key[4:] not in blocked:
            message = _message_v2.decode(value).message
            created = datetime.fromisoformat(message.created_at).timestamp()
            batch.index_text(V3_MESSAGES, message.id, created, message.body)
        elif key.startswith("profile:"):
            profile = _profile_v2.decode(value).profile
            text = " ".join(v for v in (profile.name, profile.email, profile.phone) if v)
            batch.index_text(V3_PROFILES, profile.id, 0.0, text)
    except (msgspec.DecodeError, ValueError):
        return
