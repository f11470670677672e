"""`Inbox`: the embedding API — everything PROTOCOL.md offers, as trio calls.

A host program runs one with `open_inbox(...)`; the HTTP and WebSocket transports call
the same methods, so they only translate. Refusals are `InboxError`s with the wire's
error codes. Agent operations take plain arguments and answer the wire's shapes
(msgspec Structs), so a transport encodes the result as it is.

Keys it owns (see `actors/context.py`, "Who owns which key"): `settings`, `quick_reply:`
with its `quick_replies` index, and `link_secret`, all written through the engine's
commit. Reads of ticket pages live in `listing`; every other write is an actor's.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import msgspec
import trio

from tidings.actors import invariants, keywords, listing, search, snooze, thread
from tidings.actors import settings as settings_rules
from tidings.actors.brand import Account, Timing
from tidings.actors.context import IDEMPOTENCY_KEPT_S, InboxContext
from tidings.actors.courier import Courier
from tidings.actors.directory import DirectoryActor, Resolve, directory_key
from tidings.actors.errors import InboxError, bad_request, not_found
from tidings.actors.handoff import StatusUpdate, TicketFlag, TicketInbound, message_owner
from tidings.actors.listing import TicketPage
from tidings.actors.model import (
    Activity,
    Consent,
    Location,
    Message,
    Order,
    Profile,
    QuickReply,
    Status,
    Ticket,
    TicketState,
    parse_time,
)
from tidings.actors.outbound import Mailer, SmsProvider
from tidings.actors.profile import (
    BADGE,
    AddActivity,
    AddOrder,
    GetProfile,
    InboundSms,
    LinkClicked,
    ProfileActor,
    ReplyToTicket,
    SendSource,
    SetBlocked,
    Stored,
    Upsert,
    autoreply,
)
from tidings.actors.sessions import Sessions
from tidings.actors.ticket import (
    Assign,
    FlagAgain,
    GetTicket,
    Mark,
    Note,
    PresenceUnknown,
    SetState,
    TicketActor,
)
from tidings.actors.visitor import (
    Connected,
    Disconnected,
    Hello,
    Ready,
    Say,
    Seen,
    Typing,
    VisitorActor,
    VisitorRecord,
)
from tidings.engine import (
    Address,
    AnswerLost,
    Batch,
    Child,
    Engine,
    Request,
    Store,
    Supervisor,
    SystemClock,
    WallClock,
    open_engine,
)
from tidings.engine.clock import to_datetime
from tidings.engine.remote import RemoteMail

_R = TypeVar("_R")  # what an ask answers

ACTORS = (ProfileActor, TicketActor, VisitorActor, DirectoryActor)
SETTINGS_KEY = "settings"
QUICK_REPLIES = "quick_replies"
TICKET_STATES: tuple[TicketState, ...] = ("open", "snoozed", "closed")
STATUSES: tuple[Status, ...] = ("queued", "sending", "sent", "delivered", "undelivered", "failed")


class ProfileFields(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/profiles`: a Profile without activity and orders; omitted = unchanged."""

    id: str | None = None
    phone: str | None | msgspec.UnsetType = msgspec.UNSET
    email: str | None | msgspec.UnsetType = msgspec.UNSET
    name: str | None | msgspec.UnsetType = msgspec.UNSET
    location: dict[str, str | None] | None | msgspec.UnsetType = msgspec.UNSET
    consent: dict[str, bool] | msgspec.UnsetType = msgspec.UNSET
    subscribed: bool | msgspec.UnsetType = msgspec.UNSET  # derived from consent; ignored
    blocked: bool | msgspec.UnsetType = msgspec.UNSET  # changes only through block/unblock


class TicketView(msgspec.Struct):
    """`ticket.get`: the ticket, its last 50 messages and its profile (R09)."""

    ticket: Ticket
    messages: list[Message]
    profile: Profile


class Inbox:
    """The inbox of one brand. Make it with `open_inbox`."""

    def __init__(self, engine: Engine, app: InboxContext, courier: Courier) -> None:
        self.engine = engine
        self.app = app
        self.courier = courier
        self.inbound_count = 0
        self._settings_lock = trio.Lock()

    @property
    def account(self) -> Account:
        """The brand's account details."""
        return self.app.account

    @property
    def timing(self) -> Timing:
        """Web chat timings."""
        return self.app.timing

    @property
    def sessions(self) -> Sessions:
        """The live web chat connections of this process."""
        return self.app.sessions

    @property
    def settings(self) -> settings_rules.Settings:
        """The current settings."""
        return self.app.settings

    def now(self) -> float:
        """Wall-clock time, epoch seconds."""
        return self.app.now()

    async def _start(self, seed: dict[str, Any] | None) -> None:
        store = self.engine.store
        raw = await store.get(SETTINGS_KEY)
        if raw is not None:
            self.app.settings = msgspec.json.decode(raw, type=settings_rules.Settings)
        else:
            self.app.settings = settings_rules.apply(settings_rules.Settings(), seed or {})
            batch = Batch()
            batch.put(SETTINGS_KEY, msgspec.json.encode(self.app.settings))
            await self.engine.commit(batch)
        self.app.badge = await store.index_count(BADGE, frozenset())

    async def _reconcile(self) -> None:
        """Repair on start what no single actor keeps atomic across a crash (the
        invariants in `actors/invariants.py` marked "reconciled on start"), through the
        owners: the tickets close themselves, the profiles fix their badge entries, and
        timers without a purpose are dropped. Reads only when the store is consistent."""
        engine = self.engine
        snap = await invariants.snapshot(engine.store)
        to_close = [v.keys[1] for v in invariants.blocked_open(snap)]
        to_close += await self._extra_session_tickets(invariants.session_tickets(snap))
        for key in to_close:
            await engine.ask(("ticket", key.removeprefix("ticket:")), SetState("closed"))
        if to_close:
            snap = await invariants.snapshot(engine.store)  # the profiles were told
        await self._tell_profiles(snap)
        batch = Batch()
        for violation in invariants.timer_orphan(snap):
            engine.timers.cancel_durable(batch, violation.keys[0].removeprefix("timer:"))
        if batch:
            await engine.commit(batch)
        grace = self.timing.offline_grace_s
        for ticket in invariants.stale_presence(snap):
            await engine.tell(("ticket", ticket), PresenceUnknown(grace))
        self.app.badge = await engine.store.index_count(BADGE, frozenset())

    async def _tell_profiles(self, snap: invariants.Snapshot) -> None:
        """Have each profile whose view of its tickets (or badge entry) is wrong told the
        state of those tickets again, by the tickets themselves: a ticket may have moved
        since `snap` was read (a snooze due during the downtime wakes it now), and its
        own flag comes after any it sent since."""
        engine = self.engine
        wrong: dict[str, set[str]] = {}
        for violation in invariants.badge(snap) + invariants.profile_tickets(snap):
            profile = violation.keys[0].removeprefix("profile:")
            state = snap.profiles.get(profile)
            if state is None:
                continue  # tickets of a profile never stored: nobody to fix it (reported)
            named = {k.removeprefix("ticket:") for k in violation.keys[1:]}
            wrong.setdefault(profile, set()).update(named or state.unread)
        for profile, tickets in wrong.items():
            for ticket in sorted(tickets):
                if ticket in snap.tickets:  # answered once its flag is on its way
                    await engine.ask(("ticket", ticket), FlagAgain())
                else:  # gone: it counts as closed
                    await engine.tell(("profile", profile), TicketFlag(ticket, "closed", False))
            # answered after the flags sent before it: the profile has them all
            await engine.ask(("profile", profile), GetProfile())

    async def _extra_session_tickets(self, found: list[invariants.Violation]) -> list[str]:
        """Of a session's open tickets, all but the one its visitor record names (else the
        newest): those a crash left between the ticket's commit and the visitor's."""
        extra: list[str] = []
        for violation in found:
            raw = await self.engine.store.get(violation.keys[0])
            named = msgspec.json.decode(raw, type=VisitorRecord).ticket if raw else None
            tickets = sorted(violation.keys[1:])  # ids sort by creation
            keep = f"ticket:{named}" if f"ticket:{named}" in tickets else tickets[-1]
            extra += [t for t in tickets if t != keep]
        return extra

    # -- agents: tickets --------------------------------------------------------------------

    async def tickets_list(
        self,
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
        """Tickets newest activity first (R08), filtered (R24; `assignee`: an agent id or
        `"none"`), or the open ones waiting longest for an answer (R28), a page at a time."""
        return await listing.tickets(
            self.engine.store, state=state, unread=unread, channel=channel,
            attributed_to=attributed_to, order=order, limit=limit, cursor=cursor,
            assignee=assignee,
        )  # fmt: skip

    async def _ticket(self, ticket: str) -> Ticket:
        return await self.engine.ask(("ticket", ticket), GetTicket())

    async def ticket_get(self, ticket: str) -> TicketView:
        """The ticket, its last 50 messages oldest first, and its profile (R09)."""
        found = await self._ticket(ticket)
        messages = await listing.ticket_messages(self.engine.store, found)
        profile = await self.profile_get(found.profile)
        return TicketView(found, messages, profile)

    async def ticket_reply(
        self,
        ticket: str,
        body: str,
        *,
        media: Iterable[str] = (),
        author: str | None = None,
        send_anyway: bool = False,
        schedule: bool = False,
    ) -> Message:
        """An agent's reply (R03, R04, R26, R27)."""
        found = await self._ticket(ticket)
        if not isinstance(body, str):
            raise bad_request("body", "must be text")
        media = list(media)
        if not all(
            isinstance(url, str) and url.startswith(("http://", "https://")) for url in media
        ):
            raise bad_request("media", "must be a list of http(s) URLs")
        request = ReplyToTicket(ticket, body, media, author, send_anyway, schedule)
        # through the profile, the owner of consent and blocking, which hands it on (R04)
        return await self.engine.ask(("profile", found.profile), request)

    async def ticket_set_state(self, ticket: str, state: str, until: str | None = None) -> Ticket:
        """Open, snooze (R13) or close a ticket."""
        try:  # refused here, so a time the actor cannot compute with never reaches it
            if state not in TICKET_STATES:
                raise ValueError("state: must be open, snoozed or closed")
            if state == "snoozed":
                snooze.wake_time(until, self.account.timezone, to_datetime(self.now()))
        except ValueError as exc:
            await self._ticket(ticket)  # not_found is reported before bad_request
            raise InboxError("bad_request", str(exc)) from None
        return await self.engine.ask(("ticket", ticket), SetState(state, until))

    async def ticket_assign(self, ticket: str, agent: str | None) -> Ticket:
        """Give a ticket to the agent `agent` (an id), or to nobody (None). The inbox
        does not know the agents: its caller checks that `agent` is one (the transports
        answer `not_found` for an id no agent has)."""
        await self._ticket(ticket)  # not_found is reported before bad_request
        if agent is not None and (not isinstance(agent, str) or not 1 <= len(agent) <= 200):
            raise bad_request("agent", "must be an agent id or null")
        return await self.engine.ask(("ticket", ticket), Assign(agent))

    async def ticket_note(self, ticket: str, body: str, *, author: str | None = None) -> Message:
        """A private note by agent `author` in the ticket's thread: shown to agents, never
        sent to the customer, allowed on closed tickets, and neither a reply nor a first
        response (R16, R28)."""
        await self._ticket(ticket)
        if not isinstance(body, str) or not body.strip():
            raise bad_request("body", "a note needs text")
        request_id = thread.new_id("r", self.now())  # the ticket writes one note per request
        return await self.engine.ask(("ticket", ticket), Note(body, author, request_id))

    async def ticket_mark(self, ticket: str, read: bool) -> Ticket:
        """Mark a ticket read or unread."""
        if not isinstance(read, bool):
            raise bad_request("read", "must be true or false")
        return await self.engine.ask(("ticket", ticket), Mark(read))

    def badge_get(self) -> int:
        """R18: how many profiles have an open ticket with unread messages."""
        return self.app.badge

    # -- search -----------------------------------------------------------------------------

    async def messages_search(
        self, q: str, limit: int = 20, cursor: str | None = None
    ) -> search.MessagePage:
        """Messages whose body has every word of `q`, newest first, with who they are from
        or to; `limit` 1..50 per page, `cursor` from the previous page."""
        return await search.messages(self.engine.store, q, limit, cursor)

    async def profiles_search(self, q: str) -> list[Profile]:
        """Up to 20 profiles whose name, e-mail and phone hold every word of `q`."""
        return [await self.profile_get(p) for p in await search.profile_ids(self.engine.store, q)]

    # -- profiles ---------------------------------------------------------------------------

    async def profile_get(self, profile: str, metric: str | None = None) -> Profile:
        """A profile, its activity filtered by `metric` (R11)."""
        return await self.engine.ask(("profile", profile), GetProfile(metric, exists=True))

    async def profile_block(self, profile: str, blocked: bool = True) -> Profile:
        """Block (closing its open tickets) or unblock a profile (R15)."""
        await self.profile_get(profile)
        view, closing = await self.engine.ask(("profile", profile), SetBlocked(blocked))
        for ticket in closing:  # the profile told them to close: answered once they did
            try:
                await self._ticket(ticket)  # queued behind the close
            except InboxError as exc:
                if exc.code != "not_found":
                    raise
                # allowed to open just before the block, but its opening did not commit
        return view

    def _cached(self, key: str) -> str | None:
        """The profile of directory key `key` as this node's cache knows it, or None. The
        directory actors keep it current; they run on this node only while it owns their
        shard (and the cache is cleared whenever shards move)."""
        return self.app.directory.get(key) if self.engine.owns(("directory", key)) else None

    async def _resolve(self, kind: str, value: str, create: bool = True) -> str | None:
        key = directory_key(kind, value)
        found = self._cached(key)
        if found is None:
            found = await self._ask_idempotent(("directory", key), Resolve(create))
        return found

    async def _ask_idempotent(self, address: Address, request: Request[_R]) -> _R:
        """`engine.ask`, asked once more when the node that handled `request` stopped
        before answering (`AnswerLost`): only for requests whose second handling finds
        what the first did (a directory `Resolve`, an inbound SMS by its sid)."""
        try:
            return await self.engine.ask(address, request)
        except AnswerLost:
            return await self.engine.ask(address, request)

    async def upsert_profile(self, fields: dict[str, Any]) -> Profile:
        """Create or update a profile, matched by id, else phone, else e-mail."""
        try:
            given = msgspec.convert(fields, type=ProfileFields)
        except msgspec.ValidationError as exc:
            raise InboxError("bad_request", str(exc)) from None
        changes = {
            name: value
            for name, value in msgspec.structs.asdict(given).items()
            if value is not msgspec.UNSET and name not in ("id", "subscribed", "blocked")
        }
        if isinstance(changes.get("phone"), str) and not _is_phone(changes["phone"]):
            raise bad_request("phone", "must be an E.164 number such as +15551234567")
        if isinstance(changes.get("email"), str) and "@" not in changes["email"]:
            raise bad_request("email", "not an e-mail address")
        if "location" in changes:
            location = changes["location"] or {}
            unknown = set(location) - {"city", "region", "country", "timezone"}
            if unknown:
                raise bad_request(f"location.{sorted(unknown)[0]}", "unknown key")
            changes["location"] = Location(**location)
        if "consent" in changes:
            unknown = set(changes["consent"]) - {"marketing", "transactional"}
            if unknown:
                raise bad_request(f"consent.{sorted(unknown)[0]}", "unknown key")
            changes["consent"] = Consent(**changes["consent"])
        profile_id = given.id
        if profile_id is None and isinstance(changes.get("phone"), str):
            profile_id = await self._resolve("phone", changes["phone"])
        if profile_id is None and isinstance(changes.get("email"), str):
            profile_id = await self._resolve("email", changes["email"])
        if profile_id is None:
            profile_id = thread.new_id("p", self.now())
        if not profile_id or len(profile_id) > 200:
            raise bad_request("id", "must be 1 to 200 characters")
        return await self.engine.ask(("profile", profile_id), Upsert(changes))

    async def add_event(
        self, profile: str, metric: str, time: str, properties: dict[str, Any]
    ) -> None:
        """Add an item to a profile's recent activity."""
        if not metric:
            raise bad_request("metric", "is required")
        try:
            parse_time(time, "time")
        except ValueError as exc:
            raise InboxError("bad_request", str(exc)) from None
        await self.profile_get(profile)
        await self.engine.ask(("profile", profile), AddActivity(Activity(metric, time, properties)))

    async def add_order(self, profile: str, order: Order) -> None:
        """Add an order to a profile (shown only with the Shopify integration)."""
        if not math.isfinite(order.total):
            raise bad_request("total", "must be a finite number")
        if not all(math.isfinite(item.price) for item in order.items):
            raise bad_request("items.price", "must be a finite number")
        try:
            parse_time(order.time, "time")
        except ValueError as exc:
            raise InboxError("bad_request", str(exc)) from None
        await self.profile_get(profile)
        await self.engine.ask(("profile", profile), AddOrder(order))

    async def send_message(
        self,
        profile: str,
        kind: Literal["campaign", "flow"],
        source_id: str,
        source_name: str,
        body: str,
        media: Iterable[str] = (),
    ) -> Message:
        """A campaign or flow SMS from the host platform; it feeds attribution (R25)."""
        if kind not in ("campaign", "flow"):
            raise bad_request("kind", "must be campaign or flow")
        if not body.strip() and not media:
            raise bad_request("body", "a message needs text or media")
        request = SendSource(kind, source_id, source_name, body, list(media))
        return await self.engine.ask(("profile", profile), request)

    # -- SMS --------------------------------------------------------------------------------

    async def receive_sms(
        self, sid: str, phone: str, body: str, media: Iterable[str] = ()
    ) -> Message:
        """An inbound SMS; returns once it is stored (R30), exactly once per `sid`."""
        if not sid:
            raise bad_request("MessageSid", "is required")
        if not phone:
            raise bad_request("From", "is required")
        # a known number's profile without a coroutine for `_resolve`
        profile = self._cached(directory_key("phone", phone)) or await self._resolve("phone", phone)
        if profile is None:
            raise bad_request("From", "no profile for this number")  # Resolve(create) makes one
        urls = list(media)
        routes = self.app.sms_routes
        # one turn in the steady state: straight to the ticket on the profile's route
        # (on one node: a route is only known on the profile's node)
        route = None if self.app.placed else routes.get(profile)
        if (
            route is None
            or route.phone != phone
            or sid in routes.in_flight  # a retry while the first is on its way: see below
            or keywords.classify(body) is not None
        ):
            return await self._sms_to_profile(profile, InboundSms(sid, phone, body, urls))
        stored = thread.inbound(
            profile=profile, channel="sms", ticket=route.ticket, kind="support", body=body,
            media=urls, now=self.app.now(),
        )  # fmt: skip
        # a retry of `sid` meanwhile goes through the profile, which routes it under this id
        routes.in_flight[sid] = stored.message.id
        try:
            request = TicketInbound(
                stored,
                autoreply=autoreply(self.app, route.subscribed),
                phone=phone,
                idem_key=thread.sms_idem_key(sid),
                fresh=True,
                idem_unchecked=True,
            )
            try:
                message: Message = await self.engine.ask(("ticket", route.ticket), request)
            except InboxError as exc:
                if exc.code != "blocked":
                    raise
                # blocked before its closed ticket reopened (R15): the profile stores it
                # itself, under the same message id (in flight until it answers)
                return await self._sms_to_profile(profile, InboundSms(sid, phone, body, urls))
            self.inbound_count += 1
            return message
        finally:
            del routes.in_flight[sid]

    async def _sms_to_profile(self, profile: str, inbound: InboundSms) -> Message:
        """An inbound SMS through its profile's turn (R02, R15, R19, R25, R30)."""
        while True:
            try:
                # another node may store it and stop: asking again finds it (R30)
                answer = await self._ask_idempotent(("profile", profile), inbound)
                break
            except InboxError as exc:
                if exc.code != "blocked":
                    raise
                # blocked after the profile routed it, before its ticket opened (R15):
                # asked again, the profile stores it itself, under the same message id
        self.inbound_count += 1
        # a keyword or a blocked profile's message is stored by the profile; any other is
        # forwarded to the SMS ticket, which answers with the stored message
        return answer.message if isinstance(answer, Stored) else answer

    async def sms_status(
        self, provider_id: str, status: str, error_code: str | None = None
    ) -> None:
        """The provider's status callback, with its `ErrorCode` if any; unknown ids are
        ignored."""
        known = await self.engine.store.get(f"provider:{provider_id}")
        if known is None or status not in STATUSES:
            return
        stored = await thread.load(self.engine.store, known.decode())
        if stored is not None:
            message = stored.message
            update = StatusUpdate(message.id, status, error_code or None)
            await self.engine.ask(message_owner(message.ticket, message.profile), update)

    async def follow_link(self, code: str) -> str | None:
        """R17: the URL behind a short link (the click is recorded), or None."""
        raw = await self.engine.store.get(f"link:{code}")
        if raw is None:
            return None
        link = msgspec.json.decode(raw, type=dict[str, str])
        await self.engine.tell(
            ("profile", link["profile"]), LinkClicked(link["url"], link["message"])
        )
        return link["url"]

    # -- web chat ----------------------------------------------------------------------------

    async def chat_hello(
        self,
        session: str | None,
        *,
        email: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        identity: tuple[Literal["email", "phone"], str] | None = None,
        may_start: Callable[[], bool] | None = None,
    ) -> Ready:
        """A widget says hello: resume a known session or start a new one. `identity` is
        an e-mail or phone the transport has verified (a valid signature): the session
        joins that profile, made if none. `email`, `name` and `phone` are the visitor's
        unverified claims: they go on a new profile of the session's own, never on or
        to another (contract v3). `may_start` is asked before a new session is made (the
        transport's per-address limit); False refuses the hello with `rate_limited`."""
        if session and await self.engine.store.get(f"session:{session}") is not None:
            return await self.engine.ask(("visitor", session), Hello())
        if may_start is not None and not may_start():
            raise InboxError("rate_limited", "too many new sessions from this address")
        if phone and not _is_phone(phone):
            raise bad_request("visitor.phone", "must be an E.164 number")
        if identity is not None:
            kind, value = identity
            if kind == "phone" and not _is_phone(value):
                raise bad_request("identity.phone", "must be an E.164 number")
            profile = await self._resolve(kind, value)
            assert profile is not None  # Resolve(create=True) makes one
            current = await self.engine.ask(("profile", profile), GetProfile())
            if not current.verified or getattr(current, kind) != value:
                await self.engine.ask(("profile", profile), Upsert({kind: value, "verified": True}))
            if kind == "email":
                email = value
            else:
                phone = value
        else:
            # Claims go on a profile of the session's own, unverified, so the directory
            # never maps them: the host's next upsert by that e-mail or phone does not find
            # this profile. The session keeps them too (R16 mails the claimed address).
            profile = thread.new_id("p", self.now())
            fields: dict[str, Any] = {"verified": False}
            fields.update(
                (k, v) for k, v in (("name", name), ("email", email), ("phone", phone)) if v
            )
            await self.engine.ask(("profile", profile), Upsert(fields))
        token = secrets.token_urlsafe(24)  # 192 random bits
        hello = Hello(profile, email, name, phone)
        return await self.engine.ask(("visitor", token), hello)

    async def chat_message(self, session: str, body: str, client_id: str | None = None) -> Message:
        """The visitor wrote; the first message (or the first after a close) opens a
        ticket (R01, R07)."""
        return await self.engine.ask(("visitor", session), Say(body, client_id))

    async def chat_typing(self, session: str) -> None:
        """The visitor is typing (agents get `visitor.typing`)."""
        await self.engine.tell(("visitor", session), Typing())

    async def chat_seen(self, session: str) -> None:
        """A frame came from the visitor (keeps it online)."""
        await self.engine.tell(("visitor", session), Seen())

    async def chat_connected(self, session: str) -> None:
        """A connection of the session opened."""
        await self.engine.ask(("visitor", session), Connected())

    async def chat_disconnected(self, session: str) -> None:
        """A connection of the session closed."""
        await self.engine.tell(("visitor", session), Disconnected())

    # -- settings and quick replies -------------------------------------------------------

    def settings_get(self) -> dict[str, Any]:
        """The settings object."""
        settings: dict[str, Any] = msgspec.to_builtins(self.settings)
        return settings

    async def settings_update(self, partial: dict[str, Any]) -> dict[str, Any]:
        """Merge `partial` into the settings, key by key; kept across restarts."""
        async with self._settings_lock:
            try:
                updated = settings_rules.apply(self.settings, partial)
            except ValueError as exc:
                raise InboxError("bad_request", str(exc)) from None
            batch = Batch()
            batch.put(SETTINGS_KEY, msgspec.json.encode(updated))
            await self.engine.commit(batch)
            self.app.settings = updated
        return self.settings_get()

    async def quick_replies_list(self, q: str | None = None) -> list[QuickReply]:
        """Saved answers, oldest first, matching `q` in name or body (R22)."""
        store = self.engine.store
        rows = await store.index_query(QUICK_REPLIES, frozenset(), 10_000, descending=False)
        raws = await store.get_many([f"quick_reply:{member}" for member, _ in rows])
        replies = [msgspec.json.decode(raw, type=QuickReply) for raw in raws if raw]
        if q:
            needle = q.casefold()
            replies = [
                r for r in replies if needle in r.name.casefold() or needle in r.body.casefold()
            ]
        return replies

    async def quick_reply_add(self, name: str, body: str) -> QuickReply:
        """Save a new answer."""
        _check_quick_reply(name, body)
        reply = QuickReply(thread.new_id("q", self.now()), name, body)
        batch = Batch()
        batch.put(f"quick_reply:{reply.id}", msgspec.json.encode(reply))
        batch.index(QUICK_REPLIES, reply.id, self.now(), frozenset())
        await self.engine.commit(batch)
        return reply

    async def quick_reply_update(
        self, quick_reply: str, name: str | None = None, body: str | None = None
    ) -> QuickReply:
        """Change a saved answer's name or body."""
        raw = await self.engine.store.get(f"quick_reply:{quick_reply}")
        if raw is None:
            raise not_found("quick reply", quick_reply)
        reply = msgspec.json.decode(raw, type=QuickReply)
        reply.name = reply.name if name is None else name
        reply.body = reply.body if body is None else body
        _check_quick_reply(reply.name, reply.body)
        batch = Batch()
        batch.put(f"quick_reply:{reply.id}", msgspec.json.encode(reply))
        await self.engine.commit(batch)
        return reply

    async def quick_reply_delete(self, quick_reply: str) -> None:
        """Delete a saved answer."""
        if await self.engine.store.get(f"quick_reply:{quick_reply}") is None:
            raise not_found("quick reply", quick_reply)
        batch = Batch()
        batch.delete(f"quick_reply:{quick_reply}")
        batch.unindex(QUICK_REPLIES, quick_reply)
        await self.engine.commit(batch)

    # -- events -----------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The last event sequence number so far (0 if none)."""
        return self.engine.events.last_seq

    @property
    def oldest_seq(self) -> int:
        """The smallest event sequence number still kept (1 until retention drops events)."""
        return self.engine.events.oldest

    def events(self, since: int = 0) -> AsyncIterator[tuple[int | None, bytes]]:
        """Agent events with seq > `since`: replayed (from `oldest_seq` on), then live,
        gap-free; live-only events (`visitor.typing`) come with seq None."""
        return self.engine.events.subscribe(since)


def _check_quick_reply(name: object, body: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise bad_request("name", "is required")
    if not isinstance(body, str) or not body.strip():
        raise bad_request("body", "is required")


def _is_phone(value: str) -> bool:
    digits = value[1:]
    return value.startswith("+") and digits.isdigit() and 8 <= len(digits) <= 15


@asynccontextmanager
async def open_inbox(
    store: Store,
    *,
    account: Account | None = None,
    timing: Timing | None = None,
    sms: SmsProvider,
    mail: Mailer,
    settings: dict[str, Any] | None = None,
    clock: WallClock | None = None,
    link_secret: bytes | None = None,
    services: Iterable[Child] = (),
    idempotency_kept_s: float = IDEMPOTENCY_KEPT_S,
    **engine_options: Any,
) -> AsyncIterator[Inbox]:
    """Run an inbox on `store` until the block exits. `settings` seeds the settings only
    on a store that has none yet; `services` run beside it (e.g. a web server).
    Idempotency keys are kept `idempotency_kept_s`; `engine_options` go to the engine
    (e.g. `events_kept_s`, how long events are kept)."""
    clock = clock or SystemClock()
    account = account or Account()
    courier = Courier(account, clock, sms, mail)
    app = InboxContext(clock, account, timing or Timing(), courier)
    app.idempotency_kept_s = idempotency_kept_s
    async with open_engine(store, ACTORS, app=app, clock=clock, **engine_options) as engine:
        app.link_secret = link_secret or await _link_secret(engine)
        app.placed = engine.placement is not None
        if engine.placement is not None and engine.remote is not None:
            engine.placement.moved += [app.directory.clear, courier.moved]
            _relay_chat(engine.remote, app.sessions)
        inbox = Inbox(engine, app, courier)
        await inbox._start(settings)
        await inbox._reconcile()
        async with trio.open_nursery() as nursery:
            courier_child = Child("courier", functools.partial(courier.run, engine.context))
            supervisor = Supervisor([courier_child, *services], name="inbox")
            await nursery.start(supervisor.run)
            try:
                yield inbox
            finally:
                nursery.cancel_scope.cancel()


def _relay_chat(remote: RemoteMail, sessions: Sessions) -> None:
    """Web chat frames reach a visitor's connections on every node: a ticket on one node
    answers a visitor connected to another."""
    encode = msgspec.json.Encoder().encode
    decode = msgspec.json.Decoder(tuple[str, dict[str, Any]]).decode

    def relay(session: str, frame: dict[str, Any]) -> None:
        remote.notify("chat", encode((session, frame)))

    def arrived(payload: bytes) -> None:
        sessions.deliver_here(*decode(payload))

    sessions.relay = relay
    remote.listeners["chat"] = arrived


async def _link_secret(engine: Engine) -> bytes:
    """The key of short-link codes: made once per store and kept."""
    found = await engine.store.get("link_secret")
    if found is not None:
        return found
    secret = secrets.token_bytes(32)
    batch = Batch()
    batch.put("link_secret", secret)
    await engine.commit(batch)
    return secret


__all__ = ["Inbox", "InboxError", "ProfileFields", "TicketPage", "TicketView", "open_inbox"]
