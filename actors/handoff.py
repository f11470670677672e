"""What profiles, visitors and tickets hand one another (so neither imports the other)."""

from __future__ import annotations

import msgspec
from tidings.actors.model import Message, StoredMessage, TicketState
from tidings.engine import Request


class TicketFlag(msgspec.Struct):
    """A ticket of the profile changed state or read flag (ticket → profile)."""

    ticket: str
    state: TicketState
    unread: bool


class TicketInbound(Request[Message]):
    """An inbound support message for a ticket, which it opens, reopens or wakes
    (profile or visitor → ticket)."""

    message: StoredMessage
    autoreply: str | None = None
    phone: str | None = None
    email: str | None = None
    session: str | None = None
    greeting: StoredMessage | None = None
    idem_key: str | None = None  # written with the message, so a resend stores nothing new
