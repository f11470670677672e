"""VisitorActor: one web chat session — its tickets (R01, R07), the welcome or office-hours
message (R23), and presence (online while a connection is open; offline after a grace
period or when no frame came for a while), which drives the follow-up e-mail (R16)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from tidings.actors import office_hours, thread
from tidings.actors.errors import InboxError, bad_request
from tidings.actors.handoff import TicketInbound
from tidings.actors.model import Message, StoredMessage, encode, iso
from tidings.actors.profile import IsBlocked
from tidings.actors.ticket import VisitorPresence
from tidings.engine import Actor, Batch, handler
from tidings.engine.clock import to_datetime

if TYPE_CHECKING:
    from tidings.actors.inbox import Inbox


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


class Hello(msgspec.Struct):
    """A connection said hello; `profile` is set when the session is new."""

    profile: str | None = None
    email: str | None = None
    name: str | None = None
    phone: str | None = None


class Say(msgspec.Struct):
    """The visitor sent a message."""

    body: str
    client_id: str | None = None


class Connected(msgspec.Struct):
    pass


class Disconnected(msgspec.Struct):
    pass


class Seen(msgspec.Struct):
    """A frame came from the visitor (any frame, `ping` included)."""


class Typing(msgspec.Struct):
    pass


class GoOffline(msgspec.Struct):
    """No connection for the grace period, or no frame for the idle timeout."""


class VisitorActor(Actor):
    """A web chat session. Its key is the session token."""

    kind = "visitor"
    __slots__ = ("record", "connections", "online")

    @property
    def inbox(self) -> Inbox:
        return self.engine.app  # type: ignore[no-any-return]

    async def on_activate(self) -> None:
        raw = await self.engine.store.get(f"session:{self.key}")
        self.record: VisitorRecord | None = (
            msgspec.json.decode(raw, type=VisitorRecord) if raw else None
        )
        self.connections = 0
        self.online = False

    def _existing(self) -> VisitorRecord:
        if self.record is None:
            raise InboxError("not_found", "unknown session")
        return self.record

    def _save(self, batch: Batch) -> None:
        batch.put(f"session:{self.key}", encode(self._existing()))

    @handler
    async def hello(self, msg: Hello) -> Ready:
        inbox = self.inbox
        store = self.engine.store
        greeting: Message | None = None
        if self.record is None:
            if msg.profile is None:
                raise InboxError("not_found", "unknown session")
            self.record = VisitorRecord(self.key, msg.profile, None, msg.email, msg.name, msg.phone)
            now = inbox.now()
            settings = msgspec.to_builtins(inbox.settings.webchat)
            found = office_hours.welcome_for(settings, inbox.account.timezone, to_datetime(now))
            if found is not None:  # R23: once, on the session's first hello
                kind, text = found
                stored = StoredMessage(
                    Message(
                        id=thread.new_id("m", now), ticket=None, profile=msg.profile,
                        channel="webchat", direction="outbound", kind=kind, body=text,
                        media=[], created_at=iso(now),
                    )
                )  # fmt: skip
                self.record.greeting = stored
                greeting = stored.message
            batch = Batch()
            self._save(batch)
            await inbox.commit(batch)
        record = self.record
        messages: list[Message] = []
        if record.ticket is not None:
            messages = await thread.last_messages(
                store, thread.stream("webchat", record.profile, record.ticket)
            )
        elif record.greeting is not None and greeting is None:
            messages = [record.greeting.message]
        return Ready(self.key, record.profile, record.ticket, messages, greeting)

    @handler
    async def say(self, msg: Say) -> Message:
        record = self._existing()
        inbox = self.inbox
        await self._seen()  # a message frame is a sign of life too
        if not msg.body.strip():
            raise bad_request("body", "a message needs text")
        idem_key = f"idem:chat:{self.key}:{msg.client_id}" if msg.client_id else None
        if idem_key is not None:  # the widget resends after a reconnect (R30)
            known = await self.engine.store.get(idem_key)
            found = await thread.load(self.engine.store, known.decode()) if known else None
            if found is not None:
                return found.message
        now = inbox.now()
        stored = thread.inbound(
            profile=record.profile, channel="webchat", ticket=None, kind="support",
            body=msg.body, media=[], now=now, client_id=msg.client_id,
        )  # fmt: skip
        if await self.engine.ask(
            ("profile", record.profile), IsBlocked()
        ):  # R15: stored, nothing opens, nobody is told
            batch = Batch()
            batch.put(thread.message_key(stored.message.id), encode(stored))
            if idem_key is not None:
                batch.put(idem_key, stored.message.id.encode())
            batch.append(f"thread:webchat-blocked:{record.profile}", stored.message.id.encode())
            await inbox.commit(batch)
            return stored.message
        request = TicketInbound(
            stored, email=record.email, phone=record.phone, session=self.key,
            greeting=record.greeting, idem_key=idem_key,
        )  # fmt: skip
        if record.ticket is not None:
            try:
                return await self._to_ticket(record.ticket, request)  # type: ignore[no-any-return]
            except InboxError as exc:
                if exc.code != "ticket_closed":
                    raise
        # R01/R07: the first message, or the first after the ticket closed: a new ticket
        record.ticket = thread.new_id("t", now)
        request.greeting = record.greeting
        message = await self._to_ticket(record.ticket, request)
        record.greeting = None
        batch = Batch()
        self._save(batch)
        await inbox.commit(batch)
        if not self.online and self.connections:
            await self._presence(True)
        return message  # type: ignore[no-any-return]

    async def _to_ticket(self, ticket: str, request: TicketInbound) -> Message:
        return await self.engine.ask(("ticket", ticket), request)  # type: ignore[no-any-return]

    # -- presence ---------------------------------------------------------------------------

    async def _presence(self, online: bool) -> None:
        record = self._existing()
        self.online = online
        batch = Batch()
        data = {"session": self.key, "profile": record.profile, "ticket": record.ticket}
        thread.event(batch, "visitor.online" if online else "visitor.offline", data)
        await self.inbox.commit(batch)
        if record.ticket is not None:
            await self.engine.tell(("ticket", record.ticket), VisitorPresence(online))

    def _idle_timer(self) -> None:
        timing = self.inbox.timing
        self.engine.timers.after(
            f"idle:{self.key}", timing.idle_timeout_s, self.address, GoOffline()
        )

    @handler
    async def connected(self, msg: Connected) -> None:
        self._existing()
        self.connections += 1
        self.engine.timers.cancel(f"offline:{self.key}")
        self._idle_timer()
        if not self.online:
            await self._presence(True)

    @handler
    async def disconnected(self, msg: Disconnected) -> None:
        self.connections = max(self.connections - 1, 0)
        if self.connections == 0:
            grace = self.inbox.timing.offline_grace_s
            self.engine.timers.after(f"offline:{self.key}", grace, self.address, GoOffline())

    async def _seen(self) -> None:
        """A frame came: the visitor is (again) online until it is idle for a while."""
        self._idle_timer()
        if not self.online and self.record is not None:
            await self._presence(True)

    @handler
    async def seen(self, msg: Seen) -> None:
        await self._seen()

    @handler
    async def typing(self, msg: Typing) -> None:
        record = self._existing()
        await self._seen()
        batch = Batch()
        data = {"session": self.key, "profile": record.profile, "ticket": record.ticket}
        thread.event(batch, "visitor.typing", data)
        await self.inbox.commit(batch)

    @handler
    async def go_offline(self, msg: GoOffline) -> None:
        self.engine.timers.cancel(f"idle:{self.key}")
        self.engine.timers.cancel(f"offline:{self.key}")
        if self.online and self.record is not None:
            await self._presence(False)
