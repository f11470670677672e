"""`InboxContext`: what the inbox's actors, threads and courier may use of the inbox.

The actors get it as `ctx.app` (the engine's typed domain context); `Inbox`, the facade
on top, builds it and keeps its values current (settings, link secret, badge). Nothing
below `inbox.py` imports the facade.

## Who owns which key

Every stored key family has one owner, the only code that writes it; every write passes
`Engine.commit` (`ctx.commit`), where the cluster storey checks the writer's fencing token.
A message record (`msg:`) belongs to its ticket when `Message.ticket` is set, else to its
profile (`handoff.message_owner`): that actor writes it, its `provider:`, `link:` and
idempotency keys and its outbox job, and takes its delivery status (the courier's `Sent`,
`Inbox.sms_status`). Others read, never write. Consent and blocking belong to the profile:
the courier asks it (`MayText`) before handing over a held, scheduled or in-doubt SMS,
a ticket asks it (`MayOpen`) before it opens or reopens, and a ticket told of a carrier
opt-out (ErrorCode 21610) passes it on (`CarrierOptOut`).

| Key family | Owner (the only writer) | Who else may read |
|---|---|---|
| `profile:{id}`, its entry in the `profiles` text index | ProfileActor `{id}` | `search` (`messages.search` reads the name, phone and e-mail) |
| `ticket:{id}` (with its replies' and notes' request ids), indexes `tickets`, `waiting` (tagged with the assignee) | TicketActor `{id}` | `listing` (ticket pages) |
| `session:{token}` | VisitorActor `{token}` | `Inbox.chat_hello` (is it known) |
| `msg:{id}` and its entry in the `messages` text index | the message's ticket, else its profile (which also stores a blocked profile's web chat messages, not indexed) | `listing`, `thread` readers (ticket, visitor, profile), `Inbox.sms_status`, `search` |
| `provider:{sid}` | the message's owner | `Inbox.sms_status` |
| `link:{code}` | the owner of the message it is in | `Inbox.follow_link` |
| `idem:sms:{MessageSid}` | the message's owner: its SMS ticket, or the profile (keywords, blocked); written with an expiry (`idempotency_kept_s`), after which the engine's retention forgets it | ProfileActor (retried deliveries) |
| `idem:chat:{session}:{client_id}` | the message's owner: its ticket, or the profile when blocked; expires as `idem:sms:` | VisitorActor (resends) |
| `thread:sms:{profile}` (log) | appended by each message's owner: the profile and its SMS tickets | `listing`, `thread.last_messages` |
| `thread:webchat:{ticket}` (log) | TicketActor `{ticket}` | `listing`, VisitorActor (resume), the ticket (R16 summary) |
| `thread:webchat-blocked:{profile}` (log) | ProfileActor `{profile}` | — (kept, shown nowhere) |
| `phone:{E.164}`, `email:{address}` and `InboxContext.directory` | DirectoryActor `{key}` | `Inbox` (resolving, through the cache) |
| `InboxContext.sms_routes` (memory only): a profile's route for its plain SMS | ProfileActor `{id}` (grants its own after routing an SMS, revokes it before any other commit of its state); its `in_flight` ids: `Inbox.receive_sms` | `Inbox.receive_sms` (sends on it straight to the ticket, which then checks `idem:sms:` itself), ProfileActor (in-flight ids, R30) |
| `outbox:{job}`, index `outbox` | the actor that queued the job: the message's owner (SMS), the ticket (e-mail); for SMS it also records the courier's intent on the job (`Attempting`, before each first provider call) and removes the job with the outcome (`Sent`) | the courier (sends, then tells the owner; an in-doubt job is looked up at the provider first) |
| index `badge` | ProfileActor (its own entry) | `Inbox` at start (the count) |
| `settings` | `Inbox.settings_update` (under its lock), seeded at start | actors via `InboxContext.settings` |
| `quick_reply:{id}`, index `quick_replies` | `Inbox` quick-reply commands | `Inbox.quick_replies_list` |
| `link_secret` | `open_inbox`, once per store | — |
| `demo_credentials` | `transports.server`, before the engine starts | `transports.server` |
| `webhooks:cursor`, `webhook:{delivery}`, index `webhooks` | the webhook service (`transports/webhooks.py`): the cursor with the deliveries it writes, a delivery with its attempt's outcome | — |
| durable timers (`snooze:`, `followup:`, `send:`) | the engine's timer service, set and cancelled in the TicketActor's batches | the timer service |
| event log, dead letters | the engine (`Engine.commit`, `DeadLetters`); retention drops events older than `events_kept_s`, the dead-letter writer keeps the newest 10,000 | `Inbox.events`, `/metrics` |
| `retention:events`, index `expiring` | the engine's retention service (marks of event ages; keys written with an expiry, filed by their owners' batches) | — |
| `mail-done:{shard}:{id}` | the actor that handled that mail from another node (written by `Engine.commit` in its turn's batch), deleted with the mail's acknowledgement | `RemoteMail` (redelivered mail) |
| shard leases, epochs and mailboxes, members, reply streams (Redis only) | `engine.placement` / `engine.remote` through `ShardStore` (epochs are checked by the commit script) | — |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tidings.actors import settings as settings_rules
from tidings.actors.brand import Account, Timing
from tidings.actors.model import Message
from tidings.actors.outbound import Email
from tidings.actors.sessions import Sessions
from tidings.actors.templates import Template
from tidings.engine import Batch, WallClock

IDEMPOTENCY_KEPT_S = 7 * 86400.0  # contract v3: a MessageSid is remembered 7 days at least
DIRECTORY_CACHED = 200_000  # phone and e-mail mappings kept in memory before starting over


class Outbox(Protocol):
    """Where outbound SMS and e-mail jobs go (the courier)."""

    def add_sms(self, batch: Batch, message: Message, phone: str, *, held: bool = False) -> None:
        """Queue the SMS `message`; `held`: consent and blocking are checked at hand-off."""

    def add_email(self, batch: Batch, job_id: str, email: Email, ticket: str) -> None: ...

    def queued(self) -> None:
        """Called after committing a batch that queued jobs: the courier looks again."""


class DirectoryCache:
    """phone/e-mail (`phone:…`/`email:…`) → profile id, as the directory answered, so
    an inbound SMS can skip the directory's turn. Only the directory actors write it
    (`put` what they answer or claim, `forget` what they release)."""

    def __init__(self, limit: int = DIRECTORY_CACHED) -> None:
        self._limit = limit
        self._known: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        """The profile of `key`, if known here."""
        return self._known.get(key)

    def put(self, key: str, profile: str) -> None:
        """Remember the directory's answer for `key`."""
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known[key] = profile

    def forget(self, key: str) -> None:
        """`key` maps to no profile now: ask the directory again."""
        self._known.pop(key, None)

    def clear(self) -> None:
        """Forget everything (directory shards moved between nodes)."""
        self._known.clear()


@dataclass(frozen=True, slots=True)
class SmsRoute:
    """A profile's word that its plain inbound SMS from `phone` may go straight to its
    SMS ticket: it is not blocked, has no campaign or flow reply to attribute (R25), and
    `subscribed` is its consent (the autoresponder's `non_consented` mode, R20)."""

    ticket: str
    phone: str
    subscribed: bool


class SmsRoutes:
    """The steady state of inbound SMS in one turn: profile id → `SmsRoute`, and the
    message ids of SMS in flight on such a route by MessageSid.

    Only ProfileActors write routes: each grants its own after a turn that routed an SMS
    to its ticket, and revokes it in every turn that changes its state (before that
    turn's commit), so an SMS the inbox sends on a route is one the profile would have
    routed the same way. `Inbox.receive_sms` keeps `in_flight`: a retry of the same
    MessageSid that reaches the profile meanwhile takes that id (R30)."""

    def __init__(self, limit: int = DIRECTORY_CACHED) -> None:
        self._limit = limit
        self._routes: dict[str, SmsRoute] = {}
        self.in_flight: dict[str, str] = {}

    def get(self, profile: str) -> SmsRoute | None:
        """The route of `profile`'s SMS, if it granted one."""
        return self._routes.get(profile)

    def grant(self, profile: str, route: SmsRoute) -> None:
        if len(self._routes) >= self._limit:
            self._routes.clear()
        self._routes[profile] = route

    def revoke(self, profile: str) -> None:
        self._routes.pop(profile, None)


@dataclass(eq=False)
class InboxContext:
    """The inbox's shared values and services, as its actors see them."""

    clock: WallClock
    account: Account
    timing: Timing
    outbox: Outbox
    sessions: Sessions = field(default_factory=Sessions)
    settings: settings_rules.Settings = field(default_factory=settings_rules.Settings)
    link_secret: bytes = b""
    directory: DirectoryCache = field(default_factory=DirectoryCache)
    sms_routes: SmsRoutes = field(default_factory=SmsRoutes)
    badge: int = 0  # R18: profiles with an open ticket with unread messages
    # several nodes share the store: a message may reach an actor twice (mail moved on
    # after a fenced turn elsewhere), so no actor skips a look-up on the strength of
    # having handled everything itself (`TicketInbound.fresh`)
    placed: bool = False
    # how long idempotency keys (`idem:`) are kept: a retry within it stores nothing new
    idempotency_kept_s: float = IDEMPOTENCY_KEPT_S
    # told each ticket's first-response time (R28) once it is committed (metrics)
    on_first_response: Callable[[float], None] | None = None
    _templates: dict[str, Template] = field(default_factory=dict)

    def now(self) -> float:
        """Wall-clock time, epoch seconds."""
        return self.clock.now()

    def render(self, text: str) -> str:
        """A message template filled with the brand's fields (R20); a clause naming a
        field the brand has not set (no support e-mail) is left out."""
        template = self._templates.get(text)
        if template is None:
            template = self._templates[text] = Template(text, settings_rules.TEMPLATE_FIELDS)
        return template.render(self.account.template_values(), leave_out_empty=True)

    def sender_address(self) -> str:
        """The address e-mails come from."""
        return self.account.support_email or f"no-reply@{self.account.name.lower()}.invalid"
