"""The inbox's records, in the shapes of PROTOCOL.md ("Shapes"): Message, Ticket, Profile,
QuickReply. They are what the store keeps and what the wire carries."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

Channel = Literal["sms", "webchat"]
Direction = Literal["inbound", "outbound"]
MessageKind = Literal[
    "support", "campaign", "flow", "keyword", "autoresponder", "welcome", "office_hours", "note"
]
"""`note`: an agent's private note (contract v3, *Team workflow*): shown to agents only."""
TicketState = Literal["open", "snoozed", "closed"]
Status = Literal["queued", "sending", "sent", "delivered", "undelivered", "failed"]

STATUS_RANK: dict[str, int] = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3}
FINAL_STATUSES = frozenset({"failed", "undelivered"})


_second: tuple[float, str] = (math.nan, "")  # the last whole second formatted by `iso`


def iso(epoch: float) -> str:
    """ISO 8601 with offset and microseconds, as the wire wants times: what
    ``datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")`` gives
    (microseconds rounded half to even, as `datetime` does), with the date and time of
    the whole second kept from the last call (most calls fall in the same second): a
    third of the cost, and `iso` was a few per cent of an inbound message."""
    global _second
    frac, whole = math.modf(epoch)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1.0
    elif us < 0:
        us += 1_000_000
        whole -= 1.0
    second = _second
    if second[0] != whole:
        text = datetime.fromtimestamp(whole, UTC).isoformat(timespec="seconds")
        second = _second = (whole, text.removesuffix("+00:00"))
    return f"{second[1]}.{us:06d}+00:00"


EARLIEST_YEAR = 1970
LATEST_YEAR = 9000
"""Times the server accepts lie in these years (UTC): every zone shift and every day or
week added to them stays inside what `datetime` can represent."""


def require_aware(when: datetime, field: str) -> datetime:
    """The datetime in UTC; ValueError naming `field` when it has no offset or lies
    outside the years EARLIEST_YEAR..LATEST_YEAR."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{field}: must be a time with a UTC offset")
    try:
        utc = when.astimezone(UTC)
    except OverflowError:  # the offset pushed it past year 1 or 9999
        utc = None
    if utc is None or not EARLIEST_YEAR <= utc.year <= LATEST_YEAR:
        raise ValueError(f"{field}: must be a time between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return utc


def parse_datetime(value: object, field: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text with an offset (see `require_aware`);
    ValueError naming `field` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: {value[:40]!r} is not an ISO 8601 time") from None
    return require_aware(parsed, field)


def parse_time(value: object, field: str) -> float:
    """Epoch seconds of `parse_datetime(value, field)`."""
    return parse_datetime(value, field).timestamp()


def status_moves_forward(old: str | None, new: str) -> bool:
    """Whether delivery status may go from `old` to `new` (R30: never backwards)."""
    if old is None:
        return True
    if old in FINAL_STATUSES or old == "delivered":
        return False
    if new in FINAL_STATUSES:
        return True
    return STATUS_RANK.get(new, -1) > STATUS_RANK.get(old, -1)


class Attribution(msgspec.Struct, frozen=True):
    """The campaign or flow an inbound SMS is attributed to (R25)."""

    kind: Literal["campaign", "flow"]
    id: str
    name: str


class Message(msgspec.Struct):
    """One message of a thread (PROTOCOL.md `Message`)."""

    id: str
    ticket: str | None
    profile: str
    channel: Channel
    direction: Direction
    kind: MessageKind
    body: str
    media: list[str]
    created_at: str
    author: str | None = None
    status: Status | None = None
    provider_id: str | None = None
    encoding: Literal["GSM-7", "UCS-2"] | None = None
    segments: int | None = None
    attributed_to: Attribution | None = None
    error_code: str | None = None  # why it failed: the provider's ErrorCode, or ours


class StoredMessage(msgspec.Struct):
    """A message as stored: the wire shape (inbound media already left out of `media`,
    R10) plus the inbound media URLs, kept but not shown."""

    message: Message
    inbound_media: list[str] = []
    client_id: str | None = None
    held: bool = False  # R27: held for quiet hours, not queued yet (ScheduledSend queues it)


class Followup(msgspec.Struct):
    """The follow-up e-mail of a web chat ticket (R16)."""

    status: Literal["scheduled", "sent", "impossible"]
    at: str | None


LAST_MESSAGE_CHARS = 140  # `Ticket.last_message.body` is cut to this many characters


class LastMessage(msgspec.Struct):
    """What a ticket is about at a glance: its newest message that is not a note."""

    body: str
    direction: Direction
    kind: MessageKind
    created_at: str

    @classmethod
    def of(cls, message: Message) -> LastMessage:
        """The preview of `message`."""
        body = message.body[:LAST_MESSAGE_CHARS]
        return cls(body, message.direction, message.kind, message.created_at)


class Ticket(msgspec.Struct):
    """A support conversation (PROTOCOL.md `Ticket`, with contract v3's `assignee`, the
    agent id that owns it, and `last_message`)."""

    id: str
    profile: str
    channel: Channel
    state: TicketState
    unread: bool
    snoozed_until: str | None
    created_at: str
    last_activity_at: str
    first_response_s: float | None = None
    visitor_online: bool | None = None
    followup: Followup | None = None
    assignee: str | None = None
    last_message: LastMessage | None = None


class Location(msgspec.Struct):
    """Where a profile is, as far as known."""

    city: str | None = None
    region: str | None = None
    country: str | None = None
    timezone: str | None = None


class Consent(msgspec.Struct):
    """SMS consent of a profile."""

    marketing: bool = False
    transactional: bool = False


class Activity(msgspec.Struct):
    """One item of recent activity."""

    metric: str
    time: str
    properties: dict[str, Any] = {}


class OrderItem(msgspec.Struct):
    """A line of an order."""

    name: str
    quantity: int
    price: float


class Order(msgspec.Struct):
    """A store order (shown on profiles only when the integration is Shopify)."""

    id: str
    items: list[OrderItem]
    total: float
    currency: str
    time: str


class Profile(msgspec.Struct):
    """One customer (PROTOCOL.md `Profile`)."""

    id: str
    phone: str | None = None
    email: str | None = None
    name: str | None = None
    location: Location = msgspec.field(default_factory=Location)
    consent: Consent = msgspec.field(default_factory=Consent)
    subscribed: bool = False
    blocked: bool = False
    activity: list[Activity] = []
    orders: list[Order] | None = None
    # False only for a web chat session's own profile made from unverified claims
    # (contract v3); /api/*, SMS and signed identities make verified ones.
    verified: bool = True


class QuickReply(msgspec.Struct):
    """A saved answer (R22)."""

    id: str
    name: str
    body: str


# the agent events of PROTOCOL.md (`[[webhooks]] events` names some of them)
EVENT_NAMES = frozenset({
    "ticket.created", "ticket.updated", "message.created", "message.status", "badge",
    "visitor.online", "visitor.offline", "visitor.typing", "followup.scheduled", "followup.sent",
})  # fmt: skip


class Event(msgspec.Struct):
    """An event for subscribed agents, as written to the event log."""

    event: str
    data: dict[str, Any]


encode = msgspec.json.Encoder().encode
