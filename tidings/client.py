"""A typed async client for `/ws/agent` (PROTOCOL.md), on trio and trio-websocket.

    async with open_agent_client("ws://127.0.0.1:8080/ws/agent", token) as agent:
        page = await agent.tickets_list(state="open")
        await agent.ticket_reply(page["tickets"][0]["id"], "It ships today!")
        async for event in agent.subscribe(since=0):
            print(event.seq, event.event, event.data)

One method per op, each returning the op's `result` as the contract shapes it (JSON
objects as dicts); `call(op, **args)` sends any op. Replies are matched to requests by
`id`, so calls may run concurrently. A refused request raises the `AgentError` subclass
of its code (`NotFound`, `BadRequest`, `QuietHours`, …), carrying `code`, `detail` and
the error's other fields. When the connection drops, calls waiting for a reply raise
`Disconnected` (the server may or may not have carried them out), and the client
connects again, with backoff, until it is closed (a call made meanwhile waits for the
connection, within the client's `timeout`, else raises `ReplyTimeout`); `subscribe` then goes on from the last
`seq` it yielded, so no event is missed or repeated. This module uses only the wire: it
imports nothing of the server.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

__all__ = [
    "AgentClient", "AgentError", "BadRequest", "Blocked", "CannotReopen", "Disconnected",
    "Event", "Forbidden", "NotFound", "NotSubscribed", "QuietHours", "RateLimited",
    "ReplyTimeout", "TicketClosed", "UnknownOp", "open_agent_client",
]  # fmt: skip

log = logging.getLogger("tidings.client")

JSON = dict[str, Any]
MAX_FRAME = 16 * 1024 * 1024  # what the client accepts (a page of tickets can be large)
DROPPED = "the connection to /ws/agent dropped"
CLOSE_WAIT_S = 2.0  # for the server's half of the closing handshake


# -- errors ---------------------------------------------------------------------------------


class AgentError(Exception):
    """The server refused a request (or the connection): `code` is the contract's error
    code, `detail` its text, `extra` any other fields of the error."""

    CODE: ClassVar[str] = ""  # the code a subclass stands for

    def __init__(self, code: str, detail: str = "", extra: JSON | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.extra = extra or {}


class NotFound(AgentError):
    CODE = "not_found"


class BadRequest(AgentError):
    """An argument the server cannot use; `detail` names it."""

    CODE = "bad_request"


class Forbidden(AgentError):
    """The token, or the agent's role, may not do this (R29)."""

    CODE = "forbidden"


class NotSubscribed(AgentError):
    CODE = "not_subscribed"


class TicketClosed(AgentError):
    CODE = "ticket_closed"


class Blocked(AgentError):
    CODE = "blocked"


class CannotReopen(AgentError):
    CODE = "cannot_reopen"


class QuietHours(AgentError):
    """R27: the customer's local time is outside the quiet-hours window."""

    CODE = "quiet_hours"

    @property
    def local_time(self) -> str | None:
        """The customer's local time, `"HH:MM"`."""
        return self.extra.get("local_time")

    @property
    def timezone(self) -> str | None:
        """The customer's time zone."""
        return self.extra.get("timezone")


class UnknownOp(AgentError):
    CODE = "unknown_op"


class RateLimited(AgentError):
    CODE = "rate_limited"


_BY_CODE: dict[str, type[AgentError]] = {
    cls.CODE: cls
    for cls in (NotFound, BadRequest, Forbidden, NotSubscribed, TicketClosed, Blocked,
                CannotReopen, QuietHours, UnknownOp, RateLimited)
}  # fmt: skip


def error_from(body: JSON) -> AgentError:
    """The exception for a wire error `{"code","detail",…}`."""
    code = str(body.get("code", ""))
    extra = {k: v for k, v in body.items() if k not in ("code", "detail", "type")}
    return _BY_CODE.get(code, AgentError)(code, str(body.get("detail", "")), extra)


class Disconnected(Exception):
    """The connection dropped before the reply came; the request may have been carried
    out or not."""


class ReplyTimeout(Exception):
    """No reply within the client's `timeout`."""


# -- events ---------------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True):
    """A pushed event: `seq` (None for live-only events), its name and its data."""

    seq: int | None
    event: str
    data: JSON


class _Frame(msgspec.Struct):
    """Any server frame: a reply (`id`), an event, `ready` or an error."""

    id: int | None = None
    ok: bool | None = None
    result: Any = None
    error: JSON | None = None
    type: str | None = None
    seq: int | None = None
    event: str | None = None
    data: Any = None
    agent: JSON | None = None
    code: str | None = None
    detail: str | None = None


_decode = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.Encoder().encode


class _Waiter:
    """A request waiting for its reply."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


# -- the client -----------------------------------------------------------------------------


class AgentClient:
    """A connection to `/ws/agent`, kept open (and reopened) until `aclose`. Use
    `open_agent_client`; `agent` is the `{"id","name","role"}` the server announced and
    `last_seq` the last event sequence number `subscribe` yielded."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        self.url = url
        self.agent: JSON = {}
        self.last_seq = 0
        self._token = token
        self._timeout = timeout
        self._delays = (reconnect_delay, max_reconnect_delay)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Waiter] = {}
        self._ws: WebSocketConnection | None = None
        self._connected = trio.Event()
        self._events: trio.MemorySendChannel[Event] | None = None
        self._closed = False
        self._nursery: trio.Nursery

    # -- connecting ---------------------------------------------------------------------

    async def _connect(self) -> WebSocketConnection:
        """Open the WebSocket and authenticate; a refusal raises its `AgentError`."""
        ws = await connect_websocket_url(self._nursery, self.url, max_message_size=MAX_FRAME)
        try:
            await ws.send_message(_encode({"type": "auth", "token": self._token}).decode())
            frame = _decode(await ws.get_message())
            if frame.type != "ready" or frame.agent is None:
                raise error_from({"code": frame.code or "bad_frame", "detail": frame.detail or ""})
        except BaseException:
            await _close(ws)
            raise
        self.agent = frame.agent
        return ws

    async def _reconnect(self) -> WebSocketConnection | None:
        """Connect again, with doubling delays; None when the client closed meanwhile or
        the server refuses the token now."""
        delay, most = self._delays
        while not self._closed:
            await trio.sleep(delay)
            try:
                return await self._connect()
            except AgentError as exc:
                log.error("/ws/agent refused the client again: %s", exc)
                return None
            except (OSError, HandshakeError, ConnectionClosed) as exc:
                log.info("/ws/agent: reconnecting after %r", exc)
            delay = min(delay * 2, most)
        return None

    async def _keep(self, ws: WebSocketConnection) -> None:
        """Read frames; after a drop, fail the waiting calls, connect again and resume
        the subscription."""
        current: WebSocketConnection | None = ws
        while current is not None:
            self._ws = current
            self._connected.set()
            if self._events is not None:
                self._nursery.start_soon(self._resubscribe)
            try:
                while True:
                    text = await current.get_message()
                    try:
                        self._dispatch(_decode(text))
                    except msgspec.DecodeError:
                        log.warning("/ws/agent: a frame that is not the contract's: %.200r", text)
            except ConnectionClosed:
                pass
            self._connected = trio.Event()
            self._ws = None
            for waiter in self._pending.values():
                waiter.settle(error=Disconnected(DROPPED))
            current = None if self._closed else await self._reconnect()
        self._closed = True
        self._connected.set()  # calls waiting for a connection find none: Disconnected
        if self._events is not None:
            self._events.close()

    async def _resubscribe(self) -> None:
        try:
            await self.call("subscribe", since=self.last_seq)
        except (Disconnected, ReplyTimeout, AgentError) as exc:
            log.warning("/ws/agent: subscribing again failed: %r", exc)

    def _dispatch(self, frame: _Frame) -> None:
        if frame.type == "event":
            if frame.seq is not None:
                if frame.seq <= self.last_seq:
                    return  # already yielded (a replay after a reconnect)
                self.last_seq = frame.seq
            if self._events is not None:
                try:
                    self._events.send_nowait(Event(frame.seq, frame.event or "", frame.data or {}))
                except trio.BrokenResourceError:  # the subscriber stopped reading
                    self._events = None
        elif frame.id is not None and frame.ok is not None:
            waiter = self._pending.get(frame.id)
            if waiter is not None:
                if frame.ok:
                    waiter.settle(frame.result)
                else:
                    waiter.settle(error=error_from(frame.error or {}))
        elif frame.type == "error":
            log.warning("/ws/agent: %s: %s", frame.code, frame.detail)

    # -- requests -------------------------------------------------------------------------

    async def call(self, op: str, **args: Any) -> Any:
        """Send op `op` with `args` and return its result; raises the error's
        `AgentError`, `Disconnected` or `ReplyTimeout`."""
        rid = next(self._ids)
        waiter = self._pending[rid] = _Waiter()
        try:
            with trio.fail_after(self._timeout):
                await self._connected.wait()
                ws = self._ws
                if ws is None:  # dropped again meanwhile, or the client is closed
                    raise Disconnected(DROPPED)
                try:
                    await ws.send_message(_encode({"id": rid, "op": op, **args}).decode())
                except ConnectionClosed:
                    raise Disconnected(DROPPED) from None
                await waiter.done.wait()
        except trio.TooSlowError:
            raise ReplyTimeout(f"{op}: no reply in {self._timeout:g} s") from None
        finally:
            del self._pending[rid]
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    async def subscribe(self, since: int = 0) -> AsyncGenerator[Event, None]:
        """Events with `seq > since`: replayed, then live, across reconnects, until the
        client closes. One subscription per client."""
        send, receive = trio.open_memory_channel[Event](math.inf)
        self.last_seq = since
        self._events = send
        await self.call("subscribe", since=since)
        async with receive:
            async for event in receive:
                yield event

    async def aclose(self) -> None:
        """Close the connection; waiting calls raise `Disconnected`."""
        self._closed = True
        if self._ws is not None:
            await _close(self._ws)

    # -- one method per op (PROTOCOL.md, /ws/agent) ---------------------------------------

    async def tickets_list(
        self, *, state: str | None = None, unread: bool | None = None,
        channel: str | None = None, attributed_to: str | None = None,
        assignee: str | None = None, order: str | None = None, limit: int | None = None,
        cursor: str | None = None,
    ) -> JSON:  # fmt: skip
        """`{"tickets": [Ticket…], "cursor"}`; arguments left None are not sent
        (`assignee`: an agent id, `"me"` or `"none"`)."""
        return await self._op("tickets.list", state=state, unread=unread, channel=channel,
                              attributed_to=attributed_to, assignee=assignee, order=order,
                              limit=limit, cursor=cursor)  # fmt: skip

    async def ticket_get(self, ticket: str) -> JSON:
        """`{"ticket", "messages", "profile"}`."""
        return await self._op("ticket.get", ticket=ticket)

    async def ticket_reply(
        self, ticket: str, body: str, *, media: list[str] | None = None,
        send_anyway: bool | None = None, schedule: bool | None = None,
    ) -> JSON:  # fmt: skip
        """`{"message": Message}`."""
        return await self._op("ticket.reply", ticket=ticket, body=body, media=media,
                                 send_anyway=send_anyway, schedule=schedule)  # fmt: skip

    async def ticket_set_state(self, ticket: str, state: str, until: str | None = None) -> JSON:
        """`{"ticket": Ticket}`."""
        return await self._op("ticket.set_state", ticket=ticket, state=state, until=until)

    async def ticket_assign(self, ticket: str, agent: str | None) -> JSON:
        """`{"ticket": Ticket}`, assigned to `agent` (None: unassigned)."""
        result: JSON = await self.call("ticket.assign", ticket=ticket, agent=agent)
        return result

    async def ticket_note(self, ticket: str, body: str) -> JSON:
        """`{"message": Message}`: a private note, never sent to the customer."""
        return await self._op("ticket.note", ticket=ticket, body=body)

    async def ticket_mark(self, ticket: str, read: bool) -> JSON:
        """`{"ticket": Ticket}`."""
        return await self._op("ticket.mark", ticket=ticket, read=read)

    async def messages_search(
        self, q: str, *, limit: int | None = None, cursor: str | None = None
    ) -> JSON:
        """`{"results": [{"message", "profile"}…], "cursor"}`: messages with every word
        of `q`, newest first."""
        return await self._op("messages.search", q=q, limit=limit, cursor=cursor)

    async def profiles_search(self, q: str) -> list[JSON]:
        """`[Profile…]` whose name, e-mail or phone matches `q` (at most 20)."""
        found: list[JSON] = await self.call("profiles.search", q=q)
        return found

    async def profile_get(self, profile: str, metric: str | None = None) -> JSON:
        """The `Profile`, its activity filtered by `metric`."""
        return await self._op("profile.get", profile=profile, metric=metric)

    async def profile_block(self, profile: str) -> JSON:
        """The `Profile`, blocked."""
        return await self._op("profile.block", profile=profile)

    async def profile_unblock(self, profile: str) -> JSON:
        """The `Profile`, unblocked."""
        return await self._op("profile.unblock", profile=profile)

    async def badge_get(self) -> JSON:
        """`{"unread_profiles": int}`."""
        return await self._op("badge.get")

    async def settings_get(self) -> JSON:
        """The settings object."""
        return await self._op("settings.get")

    async def settings_update(self, settings: JSON) -> JSON:
        """The settings object after merging `settings` into it."""
        return await self._op("settings.update", settings=settings)

    async def quick_replies_list(self, q: str | None = None) -> list[JSON]:
        """`[QuickReply…]`, matching `q` in name or body."""
        found: list[JSON] = await self.call("quick_replies.list", **({} if q is None else {"q": q}))
        return found

    async def quick_replies_add(self, name: str, body: str) -> JSON:
        """The new `QuickReply`."""
        return await self._op("quick_replies.add", name=name, body=body)

    async def quick_replies_update(
        self, quick_reply: str, *, name: str | None = None, body: str | None = None
    ) -> JSON:
        """The changed `QuickReply`."""
        return await self._op("quick_replies.update", quick_reply=quick_reply, name=name,
                                 body=body)  # fmt: skip

    async def quick_replies_delete(self, quick_reply: str) -> JSON:
        """`{"deleted": true}`."""
        return await self._op("quick_replies.delete", quick_reply=quick_reply)

    async def _op(self, op: str, **args: Any) -> JSON:
        """`call` with the arguments that are not None; the result is a JSON object."""
        result: JSON = await self.call(op, **{k: v for k, v in args.items() if v is not None})
        return result


async def _close(ws: WebSocketConnection) -> None:
    """Close `ws`, even inside a cancelled scope, waiting at most `CLOSE_WAIT_S` for the
    server's half of the closing handshake: a cancelled block has cancelled the reader
    that would take it, so an unbounded wait hung forever."""
    with trio.move_on_after(CLOSE_WAIT_S) as scope:
        scope.shield = True
        await ws.aclose()


@asynccontextmanager
async def open_agent_client(url: str, token: str, **options: float) -> AsyncIterator[AgentClient]:
    """Connect to `url` (`ws://host:port/ws/agent`) as the agent with `token` for the
    block; a refused token raises `Forbidden` here. `options` are `AgentClient`'s."""
    client = AgentClient(url, token, **options)
    try:
        async with trio.open_nursery() as nursery:
            client._nursery = nursery
            nursery.start_soon(client._keep, await client._connect())
            try:
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the block's own error, not wrapped by the nursery
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
