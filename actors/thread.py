"""Threads: writing messages into them and reading the last ones back.

A thread is a log of message ids; each message is a record of its own (`msg:{id}`), so a
delivery status can change without rewriting the log. The SMS thread is one per profile
(it holds flows, campaigns, keywords and support messages across closes and reopens,
R02); a web chat thread is one per ticket (every session is its own ticket, R07).

These functions write into the batch of the calling actor, which must be the message's
owner (`handoff.message_owner`: its ticket, else its profile).
"""

from __future__ import annotations

import random
from typing import Any

import msgspec

from tidings.actors import links, searchable, segments
from tidings.actors.context import InboxContext
from tidings.actors.model import (
    Channel,
    Event,
    Message,
    MessageKind,
    Status,
    StoredMessage,
    encode,
    iso,
    status_moves_forward,
)
from tidings.engine import Batch, Store, expire_at

THREAD_VIEW = 50  # R09: opening a ticket shows the last 50 messages

_decode_stored = msgspec.json.Decoder(StoredMessage).decode


def new_id(prefix: str, now: float) -> str:
    """A unique id that sorts by creation time: prefix, microseconds (hex), randomness.

    Ids are not secrets (session tokens are made apart with `secrets`), so 32 bits from
    `random` do: `secrets` cost a system call per id, 5% of the inbound pipeline."""
    return f"{prefix}{int(now * 1_000_000):x}{random.getrandbits(32):08x}"


def stream(channel: Channel, profile: str, ticket: str | None) -> str:
    """The log that holds a message of `channel` for `profile` / `ticket`."""
    if channel == "sms":
        return f"thread:sms:{profile}"
    return f"thread:webchat:{ticket}"


def message_key(message_id: str) -> str:
    """Where a message record is kept."""
    return f"msg:{message_id}"


def event_payload(name: str, data: dict[str, Any]) -> bytes:
    """An agent event (PROTOCOL.md event names) as the event log carries it."""
    return encode(Event(name, data))


def event(batch: Batch, name: str, data: dict[str, Any]) -> None:
    """Add an agent event to `batch`."""
    batch.event(event_payload(name, data))


def sms_idem_key(sid: str) -> str:
    """The idempotency key of an inbound SMS by its provider's MessageSid (R30)."""
    return f"idem:sms:{sid}"


def remember(
    app: InboxContext, batch: Batch, idem_key: str, message_id: str, *, claim: bool = False
) -> None:
    """Write the idempotency key `idem_key` for the message `message_id`: a retry within
    `limits.idempotency_kept_days` finds it; retention forgets it after that. With
    `claim`, the batch is refused (`Claimed`) if the key exists: the look-up is the write."""
    if claim:
        batch.claim(idem_key, message_id.encode())
    else:
        batch.put(idem_key, message_id.encode())
    expire_at(batch, idem_key, app.now() + app.idempotency_kept_s)


def record(batch: Batch, stored: StoredMessage, *, new: bool = True) -> None:
    """Write `stored` (and, when `new`, append it to its thread, index it for search and
    announce it)."""
    message = stored.message
    batch.put(message_key(message.id), encode(stored))
    if new:
        batch.append(stream(message.channel, message.profile, message.ticket), message.id.encode())
        searchable.index_message(batch, message)
        event(batch, "message.created", {"message": message})


async def load(store: Store, message_id: str) -> StoredMessage | None:
    """The stored message `message_id`, or None."""
    raw = await store.get(message_key(message_id))
    return _decode_stored(raw) if raw else None


async def set_status(
    store: Store,
    batch: Batch,
    message_id: str,
    status: Status,
    provider_id: str | None = None,
    error_code: str | None = None,
) -> bool:
    """What the provider said of message `message_id`, written into `batch` by the
    message's owner (`handoff.message_owner`): its provider id with the `provider:` key,
    its status if it moves forward (R30), and the reason it failed (`error_code`). True
    when the status moved."""
    stored = await load(store, message_id)
    if stored is None:
        return False
    message = stored.message
    if provider_id and message.provider_id != provider_id:
        message.provider_id = provider_id
        batch.put(f"provider:{provider_id}", message_id.encode())
    if error_code and message.error_code is None:
        message.error_code = error_code
    moved = status_moves_forward(message.status, status)
    if moved:
        message.status = status
        event(batch, "message.status", {"message": message_id, "status": status})
    record(batch, stored, new=False)
    return moved


async def last_messages(store: Store, log: str, n: int = THREAD_VIEW) -> list[Message]:
    """The last `n` messages of thread `log`, oldest first, inbound media left out (R10)."""
    ids = await store.log_tail(log, n)
    raws = await store.get_many([message_key(i.decode()) for i in ids])
    return [_decode_stored(raw).message for raw in raws if raw]


def for_customer(messages: list[Message]) -> list[Message]:
    """`messages` without the agents' private notes: what the customer may see."""
    return [m for m in messages if m.kind != "note"]


def outbound(
    app: InboxContext,
    batch: Batch,
    *,
    profile: str,
    channel: Channel,
    ticket: str | None,
    kind: MessageKind,
    body: str,
    media: list[str],
    author: str | None,
    now: float,
    held: bool = False,
) -> Message:
    """Write an outbound message into `batch`: SMS gets short links (R17), its encoding
    and segments (R26) and status `queued`. `send_sms` queues it for the courier; a
    `held` one (R27) is queued later, once, by its ticket's `send:` timer. A `note` is
    private: it is written as it is, with no status, and never sent."""
    message_id = new_id("m", now)
    message = Message(
        id=message_id,
        ticket=ticket,
        profile=profile,
        channel=channel,
        direction="outbound",
        kind=kind,
        body=body,
        media=list(media),
        created_at=iso(now),
        author=author,
    )
    if channel == "sms" and kind != "note":
        if app.settings.sms.shorten_links:
            make_code = links.message_link_codes(app.link_secret, message_id)
            message.body, made = links.shorten(body, make_code, app.account.public_url)
            for code, url in made:
                batch.put(
                    f"link:{code}",
                    msgspec.json.encode({"url": url, "profile": profile, "message": message_id}),
                )
        info = segments.encode_info(message.body)
        message.encoding, message.segments = info.encoding, info.segments
        message.status = "queued"
    record(batch, StoredMessage(message, held=held))
    return message


def send_sms(app: InboxContext, batch: Batch, message: Message, phone: str | None) -> bool:
    """Queue `message` for the courier in `batch` when it is an SMS with a number to go
    to. True when queued: the caller then tells `app.outbox.queued()` after its commit."""
    if message.channel != "sms" or not phone:
        return False
    app.outbox.add_sms(batch, message, phone)
    return True


def inbound(
    *,
    profile: str,
    channel: Channel,
    ticket: str | None,
    kind: MessageKind,
    body: str,
    media: list[str],
    now: float,
    message_id: str | None = None,
    client_id: str | None = None,
) -> StoredMessage:
    """A new inbound message (not yet written): its media kept but not shown (R10)."""
    return StoredMessage(
        Message(
            id=message_id or new_id("m", now),
            ticket=ticket,
            profile=profile,
            channel=channel,
            direction="inbound",
            kind=kind,
            body=body,
            media=[],
            created_at=iso(now),
        ),
        inbound_media=list(media),
        client_id=client_id,
    )
