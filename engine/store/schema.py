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
"""

from __future__ import annotations

from typing import Final

import msgspec

from tidings.engine.store.base import StoreError

SCHEMA_VERSION: Final = 2
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
