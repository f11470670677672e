"""VisitorActor: one web chat session — its tickets (R01, R07), the welcome or office-hours
message (R23), and presence (online while a connection is open; offline after a grace
period or when no frame came for a while), which drives the follow-up e-mail (R16)."""

from __future__ import annotations

import math

import msgspec
import trio

from tidings.actors import office_hours, thread
from tidings.actors.context import InboxContext
from tidings.actors.errors import InboxError, bad_request
from tidings.actors.handoff import TicketInbound
from tidings.actors.model import Message, StoredMessage, iso
from tidings.actors.profile import StoreIfBlocked
from tidings.actors.ticket import VisitorPresence
from tidings.engine import Batch, Request, StatefulActor, handler
from tidings.engine.clock import to_datetime

TYPING_EVERY_S = 2.0  # at most one visitor.typing per session this often (contract v3)


class VisitorRecord(msgspec.Struct):
    """What a VisitorActor keeps."""

    session: str
    profile: str
    ticket: str | None = None
    email: str | None = None
    name: str | None = None
    phone: str | None = None
    greeting: StoredMessage | None = None  # sent, waiting for the ticket it belongs to


class Ready(msgspec.Struct):
    """The answer to `Hello`: PROTOCOL.md's `ready` frame and the greeting, if one is due."""

    session: str
    profile: str
    ticket: str | None
    messages: list[Message]
    greeting: Message | None


class Hello(Request[Ready]):
    """A connection said hello; `profile` is set when the session is new."""

    profile: str | None = None
    email: str | None = None
    name: str | None = None
    phone: str | None = None


class Say(Request[Message]):
    """The visitor sent a message."""

    body: str
    client_id: str | None = None


class Connected(Request[None]):
    pass


class Disconnected(msgspec.Struct):
    pass


class Seen(msgspec.Struct):
    """A frame came from the visitor (any frame, `ping` included)."""


class Typing(msgspec.Struct):
    pass


class GoOffline(msgspec.Struct):
    """No connection for the grace period, or no frame for the idle timeout."""


class VisitorActor(StatefulActor[InboxContext, VisitorRecord]):
    """A web chat session. Its key is the session token; its state is kept at
    `session:{key}`."""

    kind = "visitor"
    state_type = VisitorRecord
    __slots__ = ("connections", "online", "typing_at")

    def state_key(self) -> str:
        return f"session:{self.key}"

    async def on_activate(self) -> None:
        self.connections = 0
        self.online = False
        self.typing_at = -math.inf  # trio time of the last visitor.typing pushed

    def _existing(self) -> VisitorRecord:
        if self.state is None:
            raise InboxError("not_found", "unknown session")
        return self.state

    @handler
    async def hello(self, msg: Hello) -> Ready:
        app = self.ctx.app
        store = self.ctx.store
        greeting: Message | None = None
        if self.state is None:
            if msg.profile is None:
                raise InboxError("not_found", "unknown session")
            self.state = VisitorRecord(self.key, msg.profile, None, msg.email, msg.name, msg.phone)
            now = app.now()
            settings = msgspec.to_builtins(app.settings.webchat)
            found = office_hours.welcome_for(settings, app.account.timezone, to_datetime(now))
            if found is not None:  # R23: once, on the session's first hello
                kind, text = found
                stored = StoredMessage(
                    Message(
                        id=thread.new_id("m", now), ticket=None, profile=msg.profile,
                        channel="webchat", direction="outbound", kind=kind, body=text,
                        media=[], created_at=iso(now),
                    )
                )  # fmt: skip
                self.state.greeting = stored
                greeting = stored.message
            await self.save()
        record = self.state
        messages: list[Message] = []
        if record.ticket is not None:
            messages = thread.for_customer(
                await thread.last_messages(
                    store, thread.stream("webchat", record.profile, record.ticket)
                )
            )
        elif record.greeting is not None and greeting is None:
            messages = [record.greeting.message]
        return Ready(self.key, record.profile, record.ticket, messages, greeting)

    @handler
    async def say(self, msg: Say) -> Message:
        record = self._existing()
        app = self.ctx.app
        await self._seen()  # a message frame is a sign of life too
        if not msg.body.strip():
            raise bad_request("body", "a message needs text")
        idem_key = f"idem:chat:{self.key}:{msg.client_id}" if msg.client_id else None
        if idem_key is not None:  # the widget resends after a reconnect (R30)
            known = await self.ctx.store.get(idem_key)
            found = await thread.load(self.ctx.store, known.decode()) if known else None
            if found is not None:
                return found.message
        now = app.now()
        stored = thread.inbound(
            profile=record.profile, channel="webchat", ticket=None, kind="support",
            body=msg.body, media=[], now=now, client_id=msg.client_id,
        )  # fmt: skip
        # R15: the profile, owner of blocking, stores a blocked profile's message itself;
        # nothing opens and nobody is told
        blocked = await self.ctx.ask(("profile", record.profile), StoreIfBlocked(stored, idem_key))
        if blocked is not None:
            return blocked
        request = TicketInbound(
            stored, email=record.email, phone=record.phone, session=self.key,
            greeting=record.greeting, idem_key=idem_key,
        )  # fmt: skip
        if record.ticket is not None:
            try:
                return await self._to_ticket(record.ticket, request)
            except InboxError as exc:
                if exc.code != "ticket_closed":
                    raise
        # R01/R07: the first message, or the first after the ticket closed: a new ticket
        record.ticket = thread.new_id("t", now)
        request.greeting = record.greeting
        message = await self._to_ticket(record.ticket, request)
        record.greeting = None
        await self.save()
        if not self.online and self.connections:
            await self._presence(True)
        return message

    async def _to_ticket(self, ticket: str, request: TicketInbound) -> Message:
        return await self.ctx.ask(("ticket", ticket), request)

    # -- presence ---------------------------------------------------------------------------

    async def _presence(self, online: bool) -> None:
        record = self._existing()
        self.online = online
        batch = Batch()
        data = {"session": self.key, "profile": record.profile, "ticket": record.ticket}
        thread.event(batch, "visitor.online" if online else "visitor.offline", data)
        await self.ctx.commit(batch)
        if record.ticket is not None:
            await self.ctx.tell(("ticket", record.ticket), VisitorPresence(online))

    def _idle_timer(self) -> None:
        timing = self.ctx.app.timing
        self.ctx.timers.after(f"idle:{self.key}", timing.idle_timeout_s, self.address, GoOffline())

    @handler
    async def connected(self, msg: Connected) -> None:
        self._existing()
        self.connections += 1
        self.ctx.timers.cancel(f"offline:{self.key}")
        self._idle_timer()
        if not self.online:
            await self._presence(True)

    @handler
    async def disconnected(self, msg: Disconnected) -> None:
        self.connections = max(self.connections - 1, 0)
        if self.connections == 0:
            grace = self.ctx.app.timing.offline_grace_s
            self.ctx.timers.after(f"offline:{self.key}", grace, self.address, GoOffline())

    async def _seen(self) -> None:
        """A frame came: the visitor is (again) online until it is idle for a while."""
        self._idle_timer()
        if not self.online and self.state is not None:
            await self._presence(True)

    @handler
    async def seen(self, msg: Seen) -> None:
        await self._seen()

    @handler
    async def typing(self, msg: Typing) -> None:
        record = self._existing()
        await self._seen()
        now = trio.current_time()
        if now - self.typing_at < TYPING_EVERY_S:
            return  # a keystroke stream is one "is typing", not an event per frame
        self.typing_at = now
        # live only (contract v3): pushed to the agents connected now, never stored
        data = {"session": self.key, "profile": record.profile, "ticket": record.ticket}
        self.ctx.announce(thread.event_payload("visitor.typing", data))

    @handler
    async def go_offline(self, msg: GoOffline) -> None:
        self.ctx.timers.cancel(f"idle:{self.key}")
        self.ctx.timers.cancel(f"offline:{self.key}")
        if self.online and self.state is not None:
            await self._presence(False)
