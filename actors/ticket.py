"""TicketActor: one support conversation — its state and read flag (R12–R14), inbound
messages that open, reopen or wake it (R01, R02), agent replies (R03, R04, R26, R27),
snoozes on durable timers (R13), first-response time (R28), and, on web chat, the
visitor's presence and the follow-up e-mail (R16); its assignee and the agents' private
notes (contract v3, *Team workflow*).

Keys it owns: `ticket:{id}` and its `tickets`/`waiting` index entries; the messages of the
ticket (inbound, greeting, replies, autoreplies) with their `provider:`, `link:` and
idempotency keys, appended to `thread:webchat:{id}` or the profile's `thread:sms:`; the
outbox jobs it queued (their SMS and its e-mails), on which it records the courier's
attempts (`Attempting`) and which it removes when the courier reports them done (as a
`MessageOwner`, like the profile); its
durable timers (`snooze:`, `followup:`, `send:`). Its record keeps the request ids of its
last replies, so a turn the engine retries after its commit writes no second message.
A held reply (R27) is queued once, by its `held` flag, when its `send:` timer fires.
"""

from __future__ import annotations

import html
from typing import Literal

import msgspec

from tidings.actors import followup_email, quiet_hours, snooze, thread
from tidings.actors.courier import Mailed, has_job, remove_job
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
    Followup,
    LastMessage,
    Message,
    Status,
    Ticket,
    TicketState,
    iso,
)
from tidings.actors.outbound import Email
from tidings.actors.owner import MessageOwner
from tidings.engine import Batch, Claimed, Refused, Request, handler
from tidings.engine.clock import to_datetime

TICKETS = "tickets"  # index: every ticket by last activity
REPLIES_KEPT = 16  # replies remembered by request id, for a turn retried after its commit
WAITING = "waiting"  # index: open tickets whose last support message is inbound (R28)


class TicketRecord(msgspec.Struct):
    """What a TicketActor keeps."""

    ticket: Ticket
    created: float
    last_activity: float
    phone: str | None = None
    email: str | None = None
    session: str | None = None
    first_inbound_at: float | None = None
    waiting_since: float | None = None
    attributions: list[str] = []
    snooze_due: float | None = None
    followup_due: float | None = None
    replies: dict[str, str] = {}  # the last replies' request ids → their message ids


# -- messages ------------------------------------------------------------------------------


class SetState(Request[Ticket]):
    """Open, snooze (until a time or a named moment) or close the ticket."""

    state: TicketState
    until: str | None = None


class Mark(Request[Ticket]):
    read: bool


class Assign(Request[Ticket]):
    """Give the ticket to an agent (by id), or to nobody (None)."""

    agent: str | None


class Note(Request[Message]):
    """An agent's private note in the thread (contract v3, *Team workflow*): never sent,
    and neither a reply nor a first response (R16, R28)."""

    body: str
    author: str | None
    request_id: str | None = None  # stable across the ticket's retries of this turn


class GetTicket(Request[Ticket]):
    pass


class FlagAgain(Request[None]):
    """Tell the profile the ticket's state and read flag again, as they are now (the
    start-up repair of a profile's view: after any flag the ticket sent before)."""


class Wake(msgspec.Struct, tag="ticket.wake", gc=False):
    """A snooze ran out (durable timer). Timer messages hold only scalars, so the garbage
    collector need not track them (`gc=False`: 16 bytes less for each pending timer)."""

    due: float


class FollowupDue(msgspec.Struct, tag="ticket.followup_due", gc=False):
    """The follow-up e-mail's debounce ran out (durable timer)."""

    due: float


class ScheduledSend(msgspec.Struct, tag="ticket.scheduled_send", gc=False):
    """A reply held for quiet hours may go now (durable timer)."""

    message: str
    phone: str


class VisitorPresence(msgspec.Struct):
    """The web chat visitor went online or offline."""

    online: bool


class PresenceUnknown(msgspec.Struct):
    """After a restart nobody knows whether the visitor is still there (presence lives in
    memory): it counts as offline after `grace` seconds unless it reconnects (R16)."""

    grace: float


class PresenceLapsed(msgspec.Struct):
    """The visitor did not reconnect within the grace after a restart."""


# -- the actor ------------------------------------------------------------------------------


_TAGS: dict[tuple[object, ...], frozenset[str]] = {}
TAGS_CACHED = 4_096  # tag sets kept; most tickets share a few (state, unread, channel)


def _tags(ticket: Ticket, attributions: list[str]) -> frozenset[str]:
    """The tags of the ticket's index entries. Made once per combination and shared:
    most tickets have one of a few, and each made afresh was a set, a frozenset and
    three strings per commit, and one more object kept for the garbage collector."""
    of = (ticket.state, ticket.unread, ticket.channel, ticket.assignee, *attributions)
    found = _TAGS.get(of)
    if found is None:
        tags = {
            f"state={ticket.state}",
            f"unread={int(ticket.unread)}",
            f"channel={ticket.channel}",
            *(f"attr={a}" for a in attributions),
        }
        if ticket.assignee is not None:
            tags.add(f"assignee={ticket.assignee}")
        if len(_TAGS) >= TAGS_CACHED:
            _TAGS.clear()
        found = _TAGS[of] = frozenset(tags)
    return found


class TicketActor(MessageOwner[TicketRecord]):
    """One ticket. Its key is the ticket id; its state is kept at `ticket:{key}`."""

    kind = "ticket"
    state_type = TicketRecord
    __slots__ = ("waiting_entry",)

    async def on_activate(self) -> None:
        # the (score, tags) of its `waiting` entry as this instance last committed it,
        # None when it committed none; False until it committed once (then unknown)
        self.waiting_entry: tuple[float, frozenset[str]] | None | Literal[False] = False

    @property
    def _new_instance(self) -> bool:
        """True until this instance commits: the engine retries a turn that crashed (it
        may have committed first) on a new instance, as the first message it handles."""
        return self.waiting_entry is False

    def _existing(self) -> TicketRecord:
        if self.state is None:
            raise InboxError("not_found", f"no ticket {self.key!r}")
        return self.state

    def _flags(self) -> tuple[TicketState, bool]:
        ticket = self._existing().ticket
        return ticket.state, ticket.unread

    async def _commit(
        self,
        batch: Batch,
        before: tuple[TicketState, bool] | None,
        created: bool = False,
        queued: bool = False,
    ) -> None:
        """Save the ticket with its index entries and event; tell the profile what changed
        and, when the batch `queued` outbox jobs, the courier."""
        waiting = self._stage(batch, created)
        await self.ctx.commit(batch)
        self._committed(before, waiting, queued)

    def _stage(self, batch: Batch, created: bool) -> tuple[float, frozenset[str]] | None:
        """Put the ticket's record, its index entries and its event into `batch`; return
        its `waiting` entry as committed with them (see `_committed`)."""
        record = self._existing()
        ticket = record.ticket
        ticket.last_activity_at = iso(record.last_activity)
        self.put_state(batch)
        frozen = _tags(ticket, record.attributions)
        batch.index(TICKETS, self.key, record.last_activity, frozen)
        waiting = None
        if ticket.state == "open" and record.waiting_since is not None:
            waiting = (record.waiting_since, frozen)
        # the `waiting` entry is written when it changes (it mostly does not: the next
        # inbound message of a waiting ticket keeps its score and tags), and always by
        # a new instance, which does not know what was stored
        if waiting != self.waiting_entry:
            if waiting is not None:
                batch.index(WAITING, self.key, *waiting)
            else:
                batch.unindex(WAITING, self.key)
        thread.event(batch, "ticket.created" if created else "ticket.updated", {"ticket": ticket})
        return waiting

    def _committed(
        self,
        before: tuple[TicketState, bool] | None,
        waiting: tuple[float, frozenset[str]] | None,
        queued: bool,
    ) -> None:
        """After the commit of `_stage`'s batch: remember its `waiting` entry, tell the
        courier when it `queued` outbox jobs, the profile when the flags changed from
        `before`, and a web chat session when the ticket closed."""
        self.waiting_entry = waiting
        record = self._existing()
        ticket = record.ticket
        if queued:
            self.ctx.app.outbox.queued()
        after = (ticket.state, ticket.unread)
        if after != before:
            self.ctx.tell_nowait(("profile", ticket.profile), TicketFlag(self.key, *after))
        if ticket.state == "closed" and before and before[0] != "closed" and record.session:
            self.ctx.app.sessions.deliver(record.session, {"type": "closed", "ticket": self.key})

    async def _may_open(self, profile: str) -> None:
        """R15: ask the profile, the owner of blocking, before the ticket opens or reopens;
        it refuses with `blocked`. Asked inside this turn, so a block that follows the
        answer queues its close behind this turn's commit."""
        await self.ctx.ask(("profile", profile), MayOpen(self.key))

    # -- inbound ----------------------------------------------------------------------------

    def _create(self, msg: TicketInbound, now: float) -> TicketRecord:
        message = msg.message.message
        ticket = Ticket(
            id=self.key,
            profile=message.profile,
            channel=message.channel,
            state="open",
            unread=True,
            snoozed_until=None,
            created_at=iso(now),
            last_activity_at=iso(now),
            visitor_online=True if message.channel == "webchat" else None,
        )
        return TicketRecord(ticket, now, now, session=msg.session)

    def _notify_new_ticket(self, batch: Batch, msg: TicketInbound) -> bool:
        """R21: e-mail every listed recipient about a new ticket; True when queued."""
        app = self.ctx.app
        setting = app.settings.notifications.new_ticket_email
        if not setting.enabled or not setting.recipients:
            return False
        message = msg.message.message
        who = msg.phone or msg.email or message.profile
        channel = "SMS" if message.channel == "sms" else "web chat"
        subject = f"New {channel} ticket from {who}"
        link = f"{app.account.public_url}/?ticket={self.key}"
        text = f"{subject}:\n\n{message.body}\n\nOpen it in the inbox: {link}\n"
        body = (
            f"<p>{html.escape(subject)}:</p><blockquote>{html.escape(message.body)}</blockquote>"
            f'<p><a href="{html.escape(link)}">Open it in the inbox</a></p>'
        )
        email = Email(app.sender_address(), tuple(setting.recipients), subject, text, body)
        app.outbox.add_email(batch, f"new-ticket:{self.key}", email, self.key)
        return True

    @handler
    async def inbound_run(self, msgs: list[TicketInbound]) -> list[Message | Refused]:
        """Several inbound messages waiting (a customer writing in a burst): those the
        steady state takes (see `_inbound`), each a new message to this open ticket, are
        stored in one commit, in order, which claims their idempotency keys. [] when fewer
        than two are; when a key was claimed before (a redelivery), each goes through
        `inbound` alone, which answers a redelivery with its stored message."""
        run: list[TicketInbound] = []
        keys: set[str] = set()
        for msg in msgs:
            if not self._steady(msg) or (msg.idem_key is not None and msg.idem_key in keys):
                break
            run.append(msg)
            if msg.idem_key is not None:
                keys.add(msg.idem_key)
        if len(run) < 2:
            return []
        now = self.ctx.app.now()
        batch = Batch()
        before = self._flags()
        queued = False
        for msg in run:
            queued |= self._take(batch, msg, now, claim=msg.idem_unchecked)
        try:
            await self._commit(batch, before, queued=queued)
        except Claimed:
            await self.reload_state()  # as stored before this run
            return [await self._alone(msg) for msg in run]
        return [msg.message.message for msg in run]

    async def _alone(self, msg: TicketInbound) -> Message | Refused:
        try:
            return await self.inbound(msg)
        except Refused as refusal:
            return refusal

    @handler
    async def inbound(self, msg: TicketInbound) -> Message:
        try:
            return await self._inbound(msg)
        except Claimed as claimed:
            # sent on the profile's route, and delivered before (R30): the claim of its
            # idempotency key refused the whole batch. From the state as stored, once
            # more under the stored id, which finds the stored message
            await self.reload_state()
            msg.message.message.id = claimed.value.decode()
            msg.fresh = msg.idem_unchecked = False
            return await self._inbound(msg)

    def _steady(self, msg: TicketInbound) -> bool:
        """Delivered twice (a retried SMS the profile routes again under its id, mail
        redelivered, a turn retried after its commit): stored once (R30). The steady
        state on one node needs no look-up: a fresh id reaching an open ticket whose
        instance committed before. On several nodes the same mail can reach this
        instance twice (moved on after a fenced turn on another node): it looks."""
        current = self.state.ticket if self.state is not None else None
        return (
            msg.fresh
            and not self.ctx.app.placed
            and current is not None
            and current.state == "open"
            and not self._new_instance
        )

    async def _inbound(self, msg: TicketInbound) -> Message:
        app = self.ctx.app
        store = self.ctx.store
        message = msg.message.message
        current = self.state.ticket if self.state is not None else None
        steady = self._steady(msg)
        # sent on the profile's route: R30 here. In the steady state the commit claims
        # the idempotency key (refused if it exists, see `inbound`: no read before the
        # write, which changes nothing but the open ticket's record); else it looks first
        claim = bool(msg.idem_unchecked and msg.idem_key and steady)
        if msg.idem_unchecked and msg.idem_key and not claim:
            claimed = await store.get(msg.idem_key)
            if claimed is not None:
                message.id, steady = claimed.decode(), False  # stored once, under that id
        if not steady:
            known = await thread.load(store, message.id)
            if known is not None:
                return known.message
        if current is not None and current.state == "closed" and current.channel == "webchat":
            raise InboxError("ticket_closed", "a closed web chat ticket never reopens (R07)")
        if current is None or current.state == "closed":
            await self._may_open(message.profile)
        now = app.now()
        batch = Batch()
        created = self.state is None
        queued = False
        if self.state is None:
            self.state = self._create(msg, now)
            queued = self._notify_new_ticket(batch, msg)
            before = None
        else:
            before = self._flags()
        queued |= self._take(batch, msg, now, claim=claim)
        # `_commit`'s steps written out: one coroutine less for every inbound message
        waiting = self._stage(batch, created)
        await self.ctx.commit(batch)
        self._committed(before, waiting, queued)
        return message

    def _take(self, batch: Batch, msg: TicketInbound, now: float, *, claim: bool) -> bool:
        """Open (or wake) the ticket with inbound `msg`, writing the message (and its
        idempotency key, claimed when `claim`, and any autoreply) into `batch`; True when
        the batch queued an outbox job."""
        app = self.ctx.app
        message = msg.message.message
        queued = False
        record = self._existing()
        ticket = record.ticket
        if ticket.state == "snoozed":
            self.ctx.timers.cancel_durable(batch, f"snooze:{self.key}")
            record.snooze_due = None
            ticket.snoozed_until = None
        ticket.state = "open"
        ticket.unread = True
        record.phone = msg.phone or record.phone
        record.email = msg.email or record.email
        record.last_activity = now
        record.first_inbound_at = record.first_inbound_at or now
        record.waiting_since = record.waiting_since or now
        attributed = message.attributed_to
        if attributed is not None:
            tag = f"{attributed.kind}:{attributed.id}"
            if tag not in record.attributions:
                record.attributions.append(tag)
        if msg.greeting is not None:  # R23: the greeting belongs to the ticket it started
            msg.greeting.message.ticket = self.key
            thread.record(batch, msg.greeting)
        message.ticket = self.key
        thread.record(batch, msg.message)
        ticket.last_message = LastMessage.of(message)
        if msg.idem_key:
            thread.remember(app, batch, msg.idem_key, message.id, claim=claim)
        if msg.autoreply:
            autoreply = thread.outbound(
                app, batch, profile=ticket.profile, channel=ticket.channel, ticket=self.key,
                kind="autoresponder", body=msg.autoreply, media=[], author=None, now=now,
            )  # fmt: skip
            queued |= thread.send_sms(app, batch, autoreply, record.phone)
            ticket.last_message = LastMessage.of(autoreply)
        return queued

    # -- agent operations --------------------------------------------------------------------

    @handler
    async def get(self, msg: GetTicket) -> Ticket:
        return self._existing().ticket

    @handler
    async def reply(self, msg: Reply) -> Message:
        record = self._existing()
        ticket = record.ticket
        app = self.ctx.app
        written = await self._written(msg.request_id)
        if written is not None:
            return written
        if ticket.state == "closed":
            raise InboxError("ticket_closed", "the ticket is closed")
        now = app.now()
        hold_until: float | None = None
        if ticket.channel == "sms":
            if not msg.consent:
                raise InboxError("not_subscribed", "the profile has no SMS consent (R04)")
            window = msgspec.to_builtins(app.settings.quiet_hours)
            zone = msg.timezone
            held = quiet_hours.check(zone, window, to_datetime(now))
            if held is not None and not msg.send_anyway:
                if not msg.schedule:
                    raise InboxError(
                        "quiet_hours",
                        f"it is {held.local_time} for the profile ({held.timezone})",
                        local_time=held.local_time,
                        timezone=held.timezone,
                    )
                hold_until = quiet_hours.next_allowed(zone, window, to_datetime(now)).timestamp()
        before = self._flags()
        batch = Batch()
        message = thread.outbound(
            app, batch, profile=ticket.profile, channel=ticket.channel, ticket=self.key,
            kind="support", body=msg.body, media=msg.media, author=msg.author, now=now,
            held=hold_until is not None,
        )  # fmt: skip
        self._remember_request(msg.request_id, message.id)
        queued = False
        if hold_until is None:
            queued = thread.send_sms(app, batch, message, msg.phone)
        elif msg.phone:
            self.ctx.timers.set_durable(
                batch, f"send:{message.id}", hold_until, self.address,
                ScheduledSend(message.id, msg.phone),
            )  # fmt: skip
        first_response: float | None = None
        if msg.author is not None:
            if ticket.first_response_s is None and record.first_inbound_at is not None:
                ticket.first_response_s = first_response = round(now - record.first_inbound_at, 6)
            record.waiting_since = None
        record.last_activity = now
        ticket.last_message = LastMessage.of(message)
        if ticket.channel == "webchat":
            self._followup_after_reply(batch, now)
        await self._commit(batch, before, queued=queued)
        if first_response is not None and app.on_first_response is not None:
            app.on_first_response(first_response)
        if ticket.channel == "webchat" and record.session:
            app.sessions.deliver(record.session, {"type": "message", "message": message})
        return message

    @handler
    async def note(self, msg: Note) -> Message:
        record = self._existing()
        ticket = record.ticket
        written = await self._written(msg.request_id)
        if written is not None:
            return written
        batch = Batch()
        # Not sent, not shown to the customer, and not a reply: the waiting time (R28),
        # the follow-up (R16), the activity order and the preview are left as they are.
        message = thread.outbound(
            self.ctx.app, batch, profile=ticket.profile, channel=ticket.channel,
            ticket=self.key, kind="note", body=msg.body, media=[], author=msg.author,
            now=self.ctx.app.now(),
        )  # fmt: skip
        self._remember_request(msg.request_id, message.id)
        self.put_state(batch)
        await self.ctx.commit(batch)
        return message

    async def _written(self, request_id: str | None) -> Message | None:
        """The message that request `request_id` wrote, when this turn committed before
        it crashed (the engine retries it): written once."""
        written = self._existing().replies.get(request_id) if request_id else None
        stored = await thread.load(self.ctx.store, written) if written else None
        return stored.message if stored is not None else None

    def _remember_request(self, request_id: str | None, message_id: str) -> None:
        """Keep which message `request_id` wrote, so a retried turn writes no second."""
        if not request_id:
            return
        replies = self._existing().replies
        replies[request_id] = message_id
        while len(replies) > REPLIES_KEPT:
            del replies[next(iter(replies))]

    @handler
    async def assign(self, msg: Assign) -> Ticket:
        record = self._existing()
        if record.ticket.assignee != msg.agent:
            record.ticket.assignee = msg.agent
            await self._commit(Batch(), self._flags())
        return record.ticket

    def _followup_after_reply(self, batch: Batch, now: float) -> None:
        """R16: an agent writes while the visitor is offline: (re)arm the follow-up."""
        record = self._existing()
        ticket = record.ticket
        app = self.ctx.app
        if ticket.visitor_online is not False or not app.settings.webchat.followup_email:
            return
        if not record.email or not app.account.support_email:
            ticket.followup = Followup("impossible", None)
            return
        due = now + app.timing.followup_delay_s
        record.followup_due = due
        ticket.followup = Followup("scheduled", iso(due))
        self.ctx.timers.set_durable(
            batch, f"followup:{self.key}", due, self.address, FollowupDue(due)
        )
        thread.event(batch, "followup.scheduled", {"ticket": self.key, "at": iso(due)})

    @handler
    async def set_state(self, msg: SetState) -> Ticket:
        record = self._existing()
        ticket = record.ticket
        app = self.ctx.app
        before = self._flags()
        batch = Batch()
        now = app.now()
        if msg.state == "open" and ticket.state == "closed":
            if ticket.channel == "webchat":
                raise InboxError(
                    "cannot_reopen", "a closed web chat ticket cannot be reopened (R07)"
                )
            await self._may_open(ticket.profile)
        elif msg.state == "snoozed":
            if msg.until is None:
                raise bad_request(
                    "until", "snoozing needs later_today, tomorrow, next_week or a time"
                )
            if ticket.state == "closed":
                raise InboxError("ticket_closed", "a closed ticket cannot be snoozed")
            try:
                wake = snooze.wake_time(msg.until, app.account.timezone, to_datetime(now))
            except ValueError as exc:
                raise InboxError("bad_request", str(exc)) from None
            due = wake.timestamp()
            record.snooze_due = due
            ticket.snoozed_until = iso(due)
            self.ctx.timers.set_durable(batch, f"snooze:{self.key}", due, self.address, Wake(due))
        if msg.state != "snoozed" and record.snooze_due is not None:
            self.ctx.timers.cancel_durable(batch, f"snooze:{self.key}")
            record.snooze_due = None
            ticket.snoozed_until = None
        ticket.state = msg.state
        await self._commit(batch, before)
        return ticket

    @handler
    async def profile_blocked(self, msg: ProfileBlocked) -> None:
        record = self.state
        if record is not None and record.ticket.state != "closed":  # else: nothing opened
            await self.set_state(SetState("closed"))

    @handler
    async def flag_again(self, msg: FlagAgain) -> None:
        record = self.state
        if record is not None:
            flag = TicketFlag(self.key, record.ticket.state, record.ticket.unread)
            self.ctx.tell_nowait(("profile", record.ticket.profile), flag)

    @handler
    async def mark(self, msg: Mark) -> Ticket:
        record = self._existing()
        before = self._flags()
        record.ticket.unread = not msg.read
        await self._commit(Batch(), before)
        return record.ticket

    # -- timers and presence --------------------------------------------------------------

    @handler
    async def wake(self, msg: Wake) -> None:
        record = self.state
        if record is None or record.ticket.state != "snoozed" or record.snooze_due != msg.due:
            return  # replaced, cancelled, or already woken: nothing to do
        before = self._flags()
        ticket = record.ticket
        ticket.state, ticket.unread, ticket.snoozed_until = "open", True, None
        record.snooze_due = None
        record.last_activity = self.ctx.app.now()
        await self._commit(Batch(), before)

    @handler
    async def scheduled_send(self, msg: ScheduledSend) -> None:
        # queued once (a timer may fire again after a crash); the courier checks consent
        # and blocking when it hands the SMS over, as they may have changed since (R27)
        store = self.ctx.store
        stored = await thread.load(store, msg.message)
        if stored is None:
            return
        message = stored.message
        # held by a version without the flag: never handed over (no provider id, no
        # outcome) and not queued
        legacy = (
            message.status == "queued"
            and message.provider_id is None
            and not await has_job(store, message.id)
        )
        if not stored.held and not legacy:
            return
        stored.held = False
        batch = Batch()
        thread.record(batch, stored, new=False)
        self.ctx.app.outbox.add_sms(batch, message, msg.phone, held=True)
        await self.ctx.commit(batch)
        self.ctx.app.outbox.queued()

    # -- its messages' delivery (the ticket owns the messages it wrote) --------------------

    async def delivered(
        self, batch: Batch, message: str, moved_to: Status | None, error_code: str | None
    ) -> None:
        await self.ctx.commit(batch)
        if error_code == CARRIER_OPT_OUT and self.state is not None:
            # the recipient opted out at the carrier: the profile, owner of consent, is told
            self.ctx.tell_nowait(("profile", self.state.ticket.profile), CarrierOptOut())

    @handler
    async def mailed(self, msg: Mailed) -> None:
        batch = Batch()
        remove_job(batch, msg.job)
        await self.ctx.commit(batch)

    @handler
    async def presence(self, msg: VisitorPresence) -> None:
        if msg.online:  # it reconnected: it is known to be there again
            self.ctx.timers.cancel(f"presence:{self.key}")
        record = self.state
        if record is None or record.ticket.visitor_online == msg.online:
            return
        ticket = record.ticket
        ticket.visitor_online = msg.online
        batch = Batch()
        if msg.online and ticket.followup is not None and ticket.followup.status == "scheduled":
            self.ctx.timers.cancel_durable(batch, f"followup:{self.key}")
            record.followup_due = None
            ticket.followup = None  # R16: back before it went out, nothing is sent
        await self._commit(batch, self._flags())

    @handler
    async def presence_unknown(self, msg: PresenceUnknown) -> None:
        record = self.state
        if record is not None and record.ticket.visitor_online:
            self.ctx.timers.after(f"presence:{self.key}", msg.grace, self.address, PresenceLapsed())

    @handler
    async def presence_lapsed(self, msg: PresenceLapsed) -> None:
        await self.presence(VisitorPresence(False))

    @handler
    async def followup_due(self, msg: FollowupDue) -> None:
        record = self.state
        if record is None or record.followup_due != msg.due or record.ticket.visitor_online:
            return
        app = self.ctx.app
        ticket = record.ticket
        # the last five the visitor saw: private notes never leave the inbox
        messages = thread.for_customer(
            await thread.last_messages(
                self.ctx.store, thread.stream("webchat", ticket.profile, self.key)
            )
        )[-5:]
        account = app.account
        link = followup_email.chat_link(account.chat_page(), record.session or "")
        composed = followup_email.compose(
            account.name,
            link,
            [(m.direction, m.body) for m in messages],
            logo_url=account.logo_url,
            privacy_url=account.privacy_url,
            terms_url=account.terms_url,
        )
        batch = Batch()
        email = Email(
            app.sender_address(),
            (record.email or "",),
            composed.subject,
            composed.text,
            composed.html,
        )
        app.outbox.add_email(batch, f"followup:{self.key}:{msg.due}", email, self.key)
        record.followup_due = None
        ticket.followup = Followup("sent", iso(app.now()))
        thread.event(batch, "followup.sent", {"ticket": self.key, "at": ticket.followup.at})
        await self._commit(batch, self._flags(), queued=True)
