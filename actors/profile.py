"""ProfileActor: one customer — details, consent and keywords (R19), blocking (R15),
activity (R11) and orders, attribution of SMS replies (R25), delivery status of the
messages it owns (R30), and which of its tickets are open and unread (the badge, R18).

Keys it owns: `profile:{id}`; its `badge` and `profiles` (search) index entries; the
messages without a ticket (keywords and their replies, campaigns, flows, a blocked
profile's SMS) with their `provider:`, `link:` and `idem:sms:` keys and outbox jobs
(with the courier's attempts: a `MessageOwner`, like the ticket), appended to
`thread:sms:{id}`. It is the owner of consent and blocking, so agent replies pass
through it (R04, R15), a ticket asks it before it opens or reopens (`MayOpen`), the
courier asks it before handing over a held or in-doubt SMS (`MayText`), and a carrier
opt-out (ErrorCode 21610) withdraws its consent. Its phone and e-mail mappings belong
to the directory: it claims and releases them there.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tidings.actors import keywords, searchable, thread
from tidings.actors.context import InboxContext, SmsRoute
from tidings.actors.courier import MayText, refusal
from tidings.actors.directory import Claim, Release, directory_key
from tidings.actors.errors import InboxError, bad_request
from tidings.actors.handoff import (
    CARRIER_OPT_OUT,
    CarrierOptOut,
    MayOpen,
    ProfileBlocked,
    Reply,
    TicketFlag,
    TicketInbound,
)
from tidings.actors.model import (
    Activity,
    Attribution,
    Message,
    Order,
    Profile,
    Status,
    StoredMessage,
    encode,
    iso,
)
from tidings.actors.owner import MessageOwner
from tidings.engine import Batch, Forward, Request, handler

ACTIVITY_KEPT = 200
ORDERS_KEPT = 50
RECENT_SIDS = 16
AWAITING_KEPT = 16  # campaign and flow SMS whose receipt may still come
BADGE = "badge"  # index of profiles with an open unread ticket


class Source(msgspec.Struct):
    """A campaign or flow SMS sent to the profile, for attribution (R25)."""

    attribution: Attribution
    message: str
    received_at: float | None = None
    used: bool = False


class ProfileState(msgspec.Struct):
    """What a ProfileActor keeps."""

    profile: Profile
    sms_ticket: str | None = None
    tickets: dict[str, str] = {}  # ticket id → state, for tickets that are not closed
    unread: list[str] = []  # open tickets with unread messages
    source: Source | None = None  # the last campaign or flow SMS received (R25)
    awaiting: list[Source] = []  # sent since, not yet received, oldest first


# -- messages ------------------------------------------------------------------------------


class Upsert(Request[Profile]):
    """Set the given profile fields (already validated); others keep their values."""

    fields: dict[str, Any]


class GetProfile(Request[Profile]):
    """The profile, its activity filtered by `metric` when given (R11)."""

    metric: str | None = None
    exists: bool = False  # True: not_found when the profile was never written


class StoreIfBlocked(Request[Message | None]):
    """A web chat message from one of the profile's visitors, asked once per message: a
    blocked profile stores it itself, outside any ticket, and answers it (R15); any other
    answers None and the visitor hands the message to its ticket."""

    message: StoredMessage
    idem_key: str | None = None


class AddActivity(Request[None]):
    activity: Activity


class AddOrder(Request[None]):
    order: Order


class SetBlocked(Request[tuple[Profile, list[str]]]):
    """Block or unblock (R15); answers the profile and the tickets it told to close."""

    blocked: bool


class InboundSms(Request["Message | Stored"]):
    """An SMS the profile sent (R02, R19, R25)."""

    sid: str
    phone: str
    body: str
    media: list[str]


class SendSource(Request[Message]):
    """A campaign or flow SMS from the host platform."""

    kind: Literal["campaign", "flow"]
    source_id: str
    source_name: str
    body: str
    media: list[str]


class ReplyToTicket(Request[Message]):
    """An agent's reply to the profile's ticket `ticket`: the profile refuses it when
    blocked (R15) and forwards it to the ticket with its consent (R04), phone and time
    zone (R27); the ticket answers."""

    ticket: str
    body: str
    media: list[str]
    author: str | None
    send_anyway: bool = False
    schedule: bool = False


class LinkClicked(msgspec.Struct):
    """A short link of a message to the profile was followed (R17)."""

    url: str
    message: str


class Stored(msgspec.Struct):
    """The answer to `InboundSms` when the profile stored the message itself."""

    message: Message


def autoreply(app: InboxContext, subscribed: bool) -> str | None:
    """R20: the autoresponder's text for a non-keyword SMS from a profile whose consent is
    `subscribed`, or None."""
    auto = app.settings.sms.autoresponder
    if auto.mode == "off" or (auto.mode == "non_consented" and subscribed):
        return None
    return app.render(auto.text)


# -- the actor ------------------------------------------------------------------------------


class ProfileActor(MessageOwner[ProfileState]):
    """One customer. Its key is the profile id; its state is kept at `profile:{key}`."""

    kind = "profile"
    state_type = ProfileState
    __slots__ = ("indexed", "known", "opening", "recent")

    async def on_activate(self) -> None:
        self.known = self.state is not None  # False: not_found until something is written
        # what the `profiles` search index holds for it: the stored profile's text, since
        # every save puts it there when it changed (schema version 3 indexed older ones)
        self.indexed = None if self.state is None else searchable.profile_text(self.state.profile)
        self.recent: dict[str, str] = {}  # the last SMS ids routed to the ticket
        self.opening: set[str] = set()  # tickets allowed to open whose flag has not come
        state = self.state
        if state is not None and state.source is not None and state.source.received_at is None:
            # saved when `source` was the last one sent, received or not
            state.awaiting.append(state.source)
            state.source = None

    @property
    def data(self) -> ProfileState:
        """The state; a new profile's until it is first saved."""
        if self.state is None:
            self.state = ProfileState(Profile(id=self.key))
        return self.state

    def _remember(self, sid: str, message_id: str) -> None:
        """Keep the last few routed SMS ids, for retries that come before the ticket wrote."""
        recent = self.recent
        recent[sid] = message_id
        if len(recent) > RECENT_SIDS:
            del recent[next(iter(recent))]

    async def _commit(self, batch: Batch, queued: bool = False, routing: bool = True) -> None:
        """Save the profile with `batch`; `queued`: the batch queued outbox jobs. Its SMS
        route is revoked first unless the change cannot touch `routing` (its tickets'
        flags): a plain SMS goes through its turn again, which grants it anew."""
        if routing:
            self.ctx.app.sms_routes.revoke(self.key)
        profile = self.data.profile
        profile.subscribed = profile.consent.marketing or profile.consent.transactional
        text = searchable.profile_text(profile)
        if text != self.indexed:
            searchable.index_profile(batch, profile)
        await self.save(batch)
        self.known = True
        self.indexed = text
        if queued:
            self.ctx.app.outbox.queued()

    def _view(self, metric: str | None = None) -> Profile:
        profile = msgspec.structs.replace(self.data.profile)
        if metric is not None:
            profile.activity = [a for a in profile.activity if a.metric == metric]
        if self.ctx.app.account.ecommerce != "shopify":
            profile.orders = None
        elif profile.orders is None:
            profile.orders = []  # R11: with the integration, no orders is an empty list
        return profile

    # -- host platform ------------------------------------------------------------------------

    @handler
    async def upsert(self, msg: Upsert) -> Profile:
        profile = self.data.profile
        released: list[str] = []
        # a visitor's unverified claims never match profiles (contract v3): only a
        # verified profile's phone and e-mail are in the directory
        verified = msg.fields.get("verified", profile.verified)
        for name in ("phone", "email"):
            new, old = msg.fields.get(name), getattr(profile, name)
            if name not in msg.fields or new == old or not verified:
                continue
            if new:  # taken before the profile says so: a number never points nowhere
                await self.ctx.ask(("directory", directory_key(name, new)), Claim(self.key))
            if old and (not new or directory_key(name, old) != directory_key(name, new)):
                released.append(directory_key(name, old))
        for name, value in msg.fields.items():
            setattr(profile, name, value)
        await self._commit(Batch())
        for key in released:
            await self.ctx.ask(("directory", key), Release(self.key))
        return self._view()

    @handler
    async def get(self, msg: GetProfile) -> Profile:
        if msg.exists and not self.known:
            raise InboxError("not_found", f"no profile {self.key!r}")
        return self._view(msg.metric)

    @handler
    async def store_if_blocked(self, msg: StoreIfBlocked) -> Message | None:
        if not self.data.profile.blocked:
            return None
        stored = msg.message
        batch = Batch()
        batch.put(thread.message_key(stored.message.id), encode(stored))
        if msg.idem_key is not None:
            thread.remember(self.ctx.app, batch, msg.idem_key, stored.message.id)
        batch.append(f"thread:webchat-blocked:{self.key}", stored.message.id.encode())
        await self.ctx.commit(batch)
        return stored.message

    @handler
    async def add_activity(self, msg: AddActivity) -> None:
        activity = self.data.profile.activity
        activity.insert(0, msg.activity)
        activity.sort(key=lambda a: a.time, reverse=True)
        del activity[ACTIVITY_KEPT:]
        await self._commit(Batch())

    @handler
    async def add_order(self, msg: AddOrder) -> None:
        orders = [o for o in (self.data.profile.orders or []) if o.id != msg.order.id]
        orders.insert(0, msg.order)
        orders.sort(key=lambda o: o.time, reverse=True)
        self.data.profile.orders = orders[:ORDERS_KEPT]
        await self._commit(Batch())

    @handler
    async def link_clicked(self, msg: LinkClicked) -> None:
        now = self.ctx.app.now()
        props = {"url": msg.url, "message": msg.message}
        await self.add_activity(AddActivity(Activity("Clicked SMS link", iso(now), props)))

    @handler
    async def reply_to_ticket(self, msg: ReplyToTicket) -> Forward:
        if not self.known:
            raise InboxError("not_found", f"no profile {self.key!r}")
        if not msg.body.strip() and not msg.media:
            raise bad_request("body", "a reply needs text or media")
        profile = self.data.profile
        if profile.blocked:
            raise InboxError("blocked", "the profile is blocked")
        request = Reply(
            msg.body, msg.media, msg.author, profile.subscribed, profile.phone,
            profile.location.timezone, msg.send_anyway, msg.schedule,
            # the engine retries the ticket's turn with this same request: the ticket
            # writes one message per request id
            request_id=thread.new_id("r", self.ctx.app.now()),
        )  # fmt: skip
        return Forward(("ticket", msg.ticket), request)  # the ticket answers

    @handler
    async def set_blocked(self, msg: SetBlocked) -> tuple[Profile, list[str]]:
        self.data.profile.blocked = msg.blocked
        await self._commit(Batch())
        # the tickets it knows open, and those allowed to open whose flag is still on its
        # way (their close is queued behind the opening turn), told from this turn: they
        # close even if the asker goes away (R15)
        to_close = sorted({*self.data.tickets, *self.opening}) if msg.blocked else []
        for ticket in to_close:
            self.ctx.tell_nowait(("ticket", ticket), ProfileBlocked())
        return self._view(), to_close

    @handler
    async def may_open(self, msg: MayOpen) -> None:
        if self.data.profile.blocked:
            raise InboxError("blocked", "the profile is blocked")
        self.opening.add(msg.ticket)

    # -- SMS -------------------------------------------------------------------------------

    def _attribution(self, now: float) -> Attribution | None:
        """R25: the last campaign or flow received, if this is the first reply in time."""
        source = self.data.source
        if source is None or source.used or source.received_at is None:
            return None
        source.used = True
        if now - source.received_at > self.ctx.app.settings.attribution_window_s:
            return None
        return source.attribution

    @handler
    async def inbound_sms(self, msg: InboundSms) -> Forward | Stored:
        app = self.ctx.app
        idem = thread.sms_idem_key(msg.sid)
        # A retried delivery (R30) finds its message id here while the first delivery may
        # still be on its way to the ticket, or in the store once it was written.
        known = self.recent.get(msg.sid) or app.sms_routes.in_flight.get(msg.sid)
        if known is None:
            found = await self.ctx.store.get(idem)
            known = found.decode() if found is not None else None
        if known is not None:
            stored = await thread.load(self.ctx.store, known)
            if stored is not None:
                return Stored(stored.message)
            # claimed but not stored yet: route it again with the same id; the ticket
            # stores a message id once
        now = app.now()
        profile = self.data.profile
        batch = Batch()
        changed = False  # the profile's own state: saved only when it changes
        if not profile.phone:  # its first number: the directory mostly maps it here already
            profile.phone = msg.phone
            self.ctx.tell_nowait(("directory", directory_key("phone", msg.phone)), Claim(self.key))
            changed = True
        word = keywords.classify(msg.body)
        stored = thread.inbound(
            profile=self.key,
            channel="sms",
            ticket=None,
            kind="keyword" if word else "support",
            body=msg.body,
            media=msg.media,
            now=now,
            message_id=known,
        )
        source_used = self.data.source is not None and self.data.source.used
        stored.message.attributed_to = self._attribution(now)
        changed |= self.data.source is not None and self.data.source.used != source_used
        if word is not None or profile.blocked:
            queued = False
            thread.remember(app, batch, idem, stored.message.id)
            thread.record(batch, stored)
            if word is not None:  # R19: the compliance layer, not the inbox
                if word.kind == "opt_out":
                    profile.consent.marketing = profile.consent.transactional = False
                elif word.kind == "opt_in":
                    profile.consent.marketing = True
                reply = thread.outbound(
                    app, batch, profile=self.key, channel="sms", ticket=None, kind="keyword",
                    body=app.render(keywords.default_reply(word.kind)), media=[],
                    author=None, now=now,
                )  # fmt: skip
                queued = thread.send_sms(app, batch, reply, msg.phone)
            # R15: a blocked profile's message is stored, and nothing else happens
            await self._commit(batch, queued)
            return Stored(stored.message)
        if self.data.sms_ticket is None:
            self.data.sms_ticket = thread.new_id("t", now)
            changed = True
        stored.message.ticket = self.data.sms_ticket
        if changed:
            await self._commit(batch)
        self._remember(msg.sid, stored.message.id)
        request = TicketInbound(
            stored,
            autoreply=autoreply(app, profile.subscribed),
            phone=msg.phone,
            idem_key=idem,
            fresh=known is None,
        )
        source = self.data.source
        if source is None or source.used:  # nothing to attribute: the next may skip this turn
            route = SmsRoute(self.data.sms_ticket, profile.phone, profile.subscribed)
            app.sms_routes.grant(self.key, route)
        return Forward(("ticket", self.data.sms_ticket), request)  # the ticket answers

    @handler
    async def send_source(self, msg: SendSource) -> Message:
        profile = self.data.profile
        if not self.known:
            raise InboxError("not_found", f"no profile {self.key!r}")
        if not profile.subscribed:
            raise InboxError("not_subscribed", "the profile has no SMS consent")
        if not profile.phone:
            raise InboxError("bad_request", "profile: the profile has no phone number")
        batch = Batch()
        message = thread.outbound(
            self.ctx.app, batch, profile=self.key, channel="sms", ticket=None, kind=msg.kind, body=msg.body, media=msg.media, author=None,
            now=self.ctx.app.now(),
        )  # fmt: skip
        queued = thread.send_sms(self.ctx.app, batch, message, profile.phone)
        attribution = Attribution(msg.kind, msg.source_id, msg.source_name)
        awaiting = self.data.awaiting
        awaiting.append(Source(attribution, message.id))
        del awaiting[:-AWAITING_KEPT]
        await self._commit(batch, queued)
        return message

    def _received(self, message_id: str, status: Status) -> None:
        """R25: a campaign or flow SMS counts as received once it is sent or delivered;
        the latest sent of those received is the one a reply is attributed to."""
        state = self.data
        if status not in ("sent", "delivered"):
            return
        for i, source in enumerate(state.awaiting):
            if source.message == message_id:
                del state.awaiting[i]
                source.received_at = self.ctx.app.now()
                # ids sort by creation: a late receipt of an older one does not win
                if state.source is None or state.source.message < source.message:
                    state.source = source
                return

    @handler
    async def may_text(self, msg: MayText) -> str | None:
        profile = self.data.profile
        return refusal(profile.blocked, profile.subscribed, msg.needs_consent)

    async def delivered(
        self, batch: Batch, message: str, moved_to: Status | None, error_code: str | None
    ) -> None:
        if moved_to is not None:
            self._received(message, moved_to)
        if error_code == CARRIER_OPT_OUT:  # the provider refused it for that reason
            self._withdraw_consent()
        await self._commit(batch)

    @handler
    async def carrier_opt_out(self, msg: CarrierOptOut) -> None:
        self._withdraw_consent()
        await self._commit(Batch())

    def _withdraw_consent(self) -> None:
        """The recipient opted out at the carrier (ErrorCode 21610): as an opt-out
        keyword would (R19), without a confirmation, which could not reach them."""
        consent = self.data.profile.consent
        consent.marketing = consent.transactional = False

    # -- tickets and the badge --------------------------------------------------------------

    @handler
    async def ticket_flag(self, msg: TicketFlag) -> None:
        state = self.data
        self.opening.discard(msg.ticket)  # known from here on by its state
        if msg.state == "closed":
            state.tickets.pop(msg.ticket, None)
        else:
            state.tickets[msg.ticket] = msg.state
        had_unread = bool(state.unread)
        unread = [t for t in state.unread if t != msg.ticket]
        if msg.state == "open" and msg.unread:
            unread.append(msg.ticket)
        state.unread = unread
        batch = Batch()
        if bool(unread) != had_unread:
            app = self.ctx.app
            if unread:
                batch.index(BADGE, self.key, app.now(), frozenset())
                app.badge += 1
            else:
                batch.unindex(BADGE, self.key)
                app.badge -= 1
            thread.event(batch, "badge", {"unread_profiles": app.badge})
        await self._commit(batch, routing=False)
        if msg.state != "closed" and state.profile.blocked:
            # opened with a leave this profile no longer remembers (its actor restarted
            # after granting it, before the block): it closes now (R15)
            self.ctx.tell_nowait(("ticket", msg.ticket), ProfileBlocked())
