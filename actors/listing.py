"""The inbox's read side: ticket pages (R08, R24, R28) and a ticket's thread (R09).

Reads the store directly, not the actors: every change is committed before it is
answered, so what a command answered is what a later read finds. Nothing here writes.
"""

from __future__ import annotations

import math

import msgspec

from tidings.actors import thread
from tidings.actors.errors import bad_request
from tidings.actors.model import Message, Ticket
from tidings.actors.ticket import TICKETS, WAITING, TicketRecord
from tidings.engine import Store

LIST_LIMIT = 200

_decode_record = msgspec.json.Decoder(TicketRecord).decode


class TicketPage(msgspec.Struct):
    """A page of `tickets.list`."""

    tickets: list[Ticket]
    cursor: str | None


async def tickets(
    store: Store,
    *,
    state: str | None = None,
    unread: bool | None = None,
    channel: str | None = None,
    attributed_to: str | None = None,
    order: str = "activity",
    limit: int = 50,
    cursor: str | None = None,
    assignee: str | None = None,
) -> TicketPage:
    """Tickets newest activity first (R08), filtered (R24; `assignee`: an agent id, or
    `"none"` for the unassigned), or the open ones waiting longest for an answer (R28),
    a page at a time; bad filters are `bad_request`."""
    tags: set[str] = set()
    if state is not None:
        if state not in ("open", "snoozed", "closed"):
            raise bad_request("state", "must be open, snoozed or closed")
        tags.add(f"state={state}")
    if unread is not None:
        tags.add(f"unread={int(unread)}")
    if channel is not None:
        if channel not in ("sms", "webchat"):
            raise bad_request("channel", "must be sms or webchat")
        tags.add(f"channel={channel}")
    if attributed_to is not None:
        kind, _, source = attributed_to.partition(":")
        if kind not in ("campaign", "flow") or not source:
            raise bad_request("attributed_to", 'must be "campaign:<id>" or "flow:<id>"')
        tags.add(f"attr={attributed_to}")
    unassigned = assignee == "none"
    if assignee is not None and not unassigned:
        if not isinstance(assignee, str) or not assignee:
            raise bad_request("assignee", 'must be an agent id, "me" or "none"')
        tags.add(f"assignee={assignee}")
    if order not in ("activity", "waiting"):
        raise bad_request("order", "must be activity or waiting")
    if not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT:
        raise bad_request("limit", f"must be 1 to {LIST_LIMIT}")
    after = decode_cursor(cursor) if cursor else None
    index, descending = (TICKETS, True) if order == "activity" else (WAITING, False)
    if order == "waiting":
        tags.discard("state=open")
        if state not in (None, "open"):
            return TicketPage([], None)
    # Unassigned tickets carry no assignee tag (nor do those stored before assignment
    # existed), so "none" reads the other filters' rows and leaves out assigned ones.
    found: list[tuple[tuple[str, float], Ticket]] = []
    while len(found) <= limit:
        rows = await store.index_query(
            index, frozenset(tags), limit + 1, descending=descending, after=after
        )
        raws = await store.get_many([f"ticket:{member}" for member, _ in rows])
        for row, raw in zip(rows, raws, strict=True):
            ticket = _decode_record(raw).ticket if raw else None
            if ticket is not None and not (unassigned and ticket.assignee is not None):
                found.append((row, ticket))
        if len(rows) <= limit:
            break
        after = (rows[-1][1], rows[-1][0])
    more = len(found) > limit
    found = found[:limit]
    last = found[-1][0] if found else None
    next_cursor = encode_cursor(last[1], last[0]) if more and last else None
    return TicketPage([ticket for _, ticket in found], next_cursor)


async def ticket_messages(store: Store, ticket: Ticket) -> list[Message]:
    """The last messages of `ticket`'s thread, oldest first (R09, R10)."""
    return await thread.last_messages(
        store, thread.stream(ticket.channel, ticket.profile, ticket.id)
    )


def encode_cursor(score: float, member: str) -> str:
    """The cursor of the page after the index row (`score`, `member`)."""
    return f"{score!r}|{member}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The index row a cursor names; a cursor this inbox did not give is `bad_request`."""
    score, sep, member = cursor.partition("|")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not sep or not math.isfinite(value):
        raise bad_request("cursor", "not a cursor this inbox gave")
    return value, member
