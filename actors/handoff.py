"""What profiles, visitors, tickets and the courier hand one another (so neither imports
the other), and who owns a message."""

from __future__ import annotations

import msgspec

from tidings.actors.model import Message, Status, StoredMessage, TicketState
from tidings.engine import Address, Request


def message_owner(ticket: str | None, profile: str) -> Address:
    """The actor that owns a message record, its `provider:` key and its delivery status:
    its ticket when it has one, else its profile (keywords, campaigns and flows)."""
    return ("ticket", ticket) if ticket else ("profile", profile)


class StatusUpdate(Request[None]):
    """The provider's status callback for a message (Inbox → the message's owner), with
    the provider's `ErrorCode` when it gave one."""

    message: str
    status: Status
    error_code: str | None = None


CARRIER_OPT_OUT = "21610"  # the provider's ErrorCode: the recipient opted out at the carrier


class CarrierOptOut(msgspec.Struct):
    """The provider reported that the profile opted out at the carrier (ErrorCode 21610):
    the profile withdraws its SMS consent, sending no confirmation (ticket → profile)."""


class TicketFlag(msgspec.Struct):
    """A ticket of the profile changed state or read flag (ticket → profile)."""

    ticket: str
    state: TicketState
    unread: bool


class MayOpen(Request[None]):
    """May the ticket open or reopen now (ticket → profile, the owner of blocking, asked
    inside the ticket's turn before it commits)? The profile refuses with `blocked` (R15);
    else it counts the ticket among those a block closes until the ticket's flag arrives,
    so a block that comes before that flag still closes it."""

    ticket: str


class ProfileBlocked(msgspec.Struct):
    """The ticket's profile was blocked: the ticket closes (R15; profile → ticket, told
    from the turn that commits the block, so the closes are queued whatever becomes of
    whoever asked for the block)."""


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
    # the message id was made for this delivery, in the turn that sent it: no earlier
    # turn of the ticket can have stored it, except one that crashed after its commit
    fresh: bool = False
    # sent on a profile's route (`context.SmsRoutes`): nobody looked `idem_key` up yet
    idem_unchecked: bool = False


class Reply(Request[Message]):
    """An agent's reply, forwarded by the ticket's profile (the owner of consent and
    blocking), which refused it if the profile is blocked (R15) and hands on, from the
    same turn, its SMS consent (R04: refused here, after `ticket_closed`, to keep the
    wire's error order), its phone number and its time zone (R27)."""

    body: str
    media: list[str]
    author: str | None
    consent: bool
    phone: str | None
    timezone: str | None
    send_anyway: bool = False
    schedule: bool = False
    request_id: str | None = None  # stable across the ticket's retries of this turn
