"""`/ws/agent`: an agent's client. Auth first, then `{id, op, …}` requests, each
answered exactly once, and the event stream after `subscribe`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio
from starlette.websockets import WebSocket

from tidings.actors.errors import InboxError
from tidings.actors.inbox import Inbox
from tidings.transports.config import AgentConfig
from tidings.transports.wire import (
    ALLOWED_ROLES,
    OP_ROLES,
    Context,
    NotJson,
    decode_json,
    error_body,
    refuse_bad_text,
    secret_matches,
    validation_error,
)
from tidings.transports.ws_common import Closed, Conn, TooBig

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 30.0
CONCURRENT_REQUESTS = 16


class Auth(msgspec.Struct):
    """The first frame."""

    type: str
    token: str


# -- op arguments (frames also carry `id` and `op`, which these ignore) ------------------------


class _Args(msgspec.Struct, kw_only=True):
    pass


class TicketsList(_Args):
    state: str | None = None
    unread: bool | None = None
    channel: str | None = None
    attributed_to: str | None = None
    order: str = "activity"
    limit: int = 50
    cursor: str | None = None
    assignee: str | None = None  # an agent id, "me" or "none"


class TicketArg(_Args):
    ticket: str


class TicketAssign(TicketArg):
    agent: str | None


class TicketNote(TicketArg):
    body: str


class TicketReply(TicketArg):
    body: str
    media: list[str] = msgspec.field(default_factory=list)
    send_anyway: bool = False
    schedule: bool = False


class TicketSetState(TicketArg):
    state: str
    until: str | None = None


class TicketMark(TicketArg):
    read: bool


class ProfileGet(_Args):
    profile: str
    metric: str | None = None


class ProfileArg(_Args):
    profile: str


class SettingsUpdate(_Args):
    settings: dict[str, Any]


class QuickRepliesList(_Args):
    q: str | None = None


class QuickReplyAdd(_Args):
    name: str
    body: str


class QuickReplyUpdate(_Args):
    quick_reply: str
    name: str | None = None
    body: str | None = None


class QuickReplyArg(_Args):
    quick_reply: str


class Subscribe(_Args):
    since: int | None = None


class MessagesSearch(_Args):
    q: str
    limit: int = 20
    cursor: str | None = None


class ProfilesSearch(_Args):
    q: str


class Session:
    """One agent connection."""

    def __init__(self, ctx: Context, inbox: Inbox, conn: Conn, agent: AgentConfig) -> None:
        self.ctx = ctx
        self.inbox = inbox
        self.conn = conn
        self.agent = agent
        self.stream_scope: trio.CancelScope | None = None
        self.nursery: trio.Nursery

    # ops ------------------------------------------------------------------------------------

    async def tickets_list(self, a: TicketsList) -> Any:
        assignee = self.agent.id if a.assignee == "me" else a.assignee
        return await self.inbox.tickets_list(
            state=a.state, unread=a.unread, channel=a.channel, attributed_to=a.attributed_to,
            order=a.order, limit=a.limit, cursor=a.cursor, assignee=assignee,
        )

    async def ticket_get(self, a: TicketArg) -> Any:
        return await self.inbox.ticket_get(a.ticket)

    async def ticket_reply(self, a: TicketReply) -> Any:
        message = await self.inbox.ticket_reply(
            a.ticket, a.body, media=a.media, author=self.agent.id,
            send_anyway=a.send_anyway, schedule=a.schedule,
        )
        return {"message": message}

    async def ticket_set_state(self, a: TicketSetState) -> Any:
        return {"ticket": await self.inbox.ticket_set_state(a.ticket, a.state, a.until)}

    async def ticket_assign(self, a: TicketAssign) -> Any:
        if a.agent is not None and all(agent.id != a.agent for agent in self.ctx.agents.values()):
            await self.inbox.ticket_get(a.ticket)  # an unknown ticket is reported first
            raise InboxError("not_found", f"no agent {a.agent!r}")
        return {"ticket": await self.inbox.ticket_assign(a.ticket, a.agent)}

    async def ticket_note(self, a: TicketNote) -> Any:
        return {"message": await self.inbox.ticket_note(a.ticket, a.body, author=self.agent.id)}

    async def ticket_mark(self, a: TicketMark) -> Any:
        return {"ticket": await self.inbox.ticket_mark(a.ticket, a.read)}

    async def profile_get(self, a: ProfileGet) -> Any:
        return await self.inbox.profile_get(a.profile, a.metric)

    async def profile_block(self, a: ProfileArg) -> Any:
        return await self.inbox.profile_block(a.profile, True)

    async def profile_unblock(self, a: ProfileArg) -> Any:
        return await self.inbox.profile_block(a.profile, False)

    async def badge_get(self, a: _Args) -> Any:
        return {"unread_profiles": self.inbox.badge_get()}

    async def settings_get(self, a: _Args) -> Any:
        return self.inbox.settings_get()

    async def settings_update(self, a: SettingsUpdate) -> Any:
        return await self.inbox.settings_update(a.settings)

    async def quick_replies_list(self, a: QuickRepliesList) -> Any:
        return await self.inbox.quick_replies_list(a.q)

    async def quick_replies_add(self, a: QuickReplyAdd) -> Any:
        return await self.inbox.quick_reply_add(a.name, a.body)

    async def quick_replies_update(self, a: QuickReplyUpdate) -> Any:
        return await self.inbox.quick_reply_update(a.quick_reply, a.name, a.body)

    async def quick_replies_delete(self, a: QuickReplyArg) -> Any:
        await self.inbox.quick_reply_delete(a.quick_reply)
        return {"deleted": True}

    async def messages_search(self, a: MessagesSearch) -> Any:
        return await self.inbox.messages_search(a.q, a.limit, a.cursor)

    async def profiles_search(self, a: ProfilesSearch) -> Any:
        return await self.inbox.profiles_search(a.q)

    async def subscribe(self, a: Subscribe) -> Any:
        since = a.since or 0
        if since < 0:
            raise InboxError("bad_request", "since: must be 0 or more")
        if self.stream_scope is not None:
            self.stream_scope.cancel()
        scope = self.stream_scope = trio.CancelScope()
        last, oldest = self.inbox.last_seq, self.inbox.oldest_seq
        events = self.inbox.events(since)
        self.nursery.start_soon(self._stream, scope, events)
        # since < oldest - 1: the events between were dropped (retention); the replay
        # starts at oldest and the client reloads what it shows
        return {"seq": last, "oldest": oldest}

    async def _stream(self, scope: trio.CancelScope, events: Any) -> None:
        """Replay, then live: `{"type":"event","seq",…payload}`."""
        with scope:
            try:
                async for seq, payload in events:
                    # payload is `{"event":…,"data":…}`; splice in type and seq (null:
                    # a live-only event, not stored and never replayed)
                    head = b"null" if seq is None else b"%d" % seq
                    await self.conn.send(b'{"type":"event","seq":' + head + b"," + payload[1:])
            except Closed:
                self.nursery.cancel_scope.cancel()

    # dispatch -------------------------------------------------------------------------------

    async def handle(self, frame: dict[str, Any]) -> None:
        """Answer one request exactly once."""
        rid = frame["id"]
        try:
            result = await self._call(frame)
        except InboxError as exc:
            reply: dict[str, Any] = {"id": rid, "ok": False, "error": error_body(exc)}
        except Exception:
            log.exception("op %r failed", frame.get("op"))
            reply = {"id": rid, "ok": False, "error": {"code": "internal", "detail": "internal error"}}
        else:
            reply = {"id": rid, "ok": True, "result": result}
        try:
            await self.conn.send(reply)
        except Closed:
            self.nursery.cancel_scope.cancel()

    async def _call(self, frame: dict[str, Any]) -> Any:
        op = frame.get("op")
        entry = OPS.get(op) if isinstance(op, str) else None
        if entry is None:
            raise InboxError("unknown_op", f"no op {op!r}")
        roles = OP_ROLES.get(op)
        if roles is not None and self.agent.role not in roles:
            raise InboxError("forbidden", f"role {self.agent.role!r} may not call {op}")
        method, args_type = entry
        refuse_bad_text({k: v for k, v in frame.items() if k not in ("id", "op")})
        try:
            args = msgspec.convert(frame, type=args_type)
        except msgspec.ValidationError as exc:
            await self._exists(frame)  # not_found is reported before bad_request
            raise validation_error(exc) from None
        return await method(self, args)

    async def _exists(self, frame: dict[str, Any]) -> None:
        ticket, profile = frame.get("ticket"), frame.get("profile")
        if isinstance(ticket, str):
            await self.inbox.ticket_get(ticket)
        elif isinstance(profile, str):
            await self.inbox.profile_get(profile)


OPS: dict[str, tuple[Callable[[Session, Any], Awaitable[Any]], type[_Args]]] = {
    "tickets.list": (Session.tickets_list, TicketsList),
    "ticket.get": (Session.ticket_get, TicketArg),
    "ticket.reply": (Session.ticket_reply, TicketReply),
    "ticket.set_state": (Session.ticket_set_state, TicketSetState),
    "ticket.mark": (Session.ticket_mark, TicketMark),
    "ticket.assign": (Session.ticket_assign, TicketAssign),
    "ticket.note": (Session.ticket_note, TicketNote),
    "profile.get": (Session.profile_get, ProfileGet),
    "profile.block": (Session.profile_block, ProfileArg),
    "profile.unblock": (Session.profile_unblock, ProfileArg),
    "badge.get": (Session.badge_get, _Args),
    "settings.get": (Session.settings_get, _Args),
    "settings.update": (Session.settings_update, SettingsUpdate),
    "quick_replies.list": (Session.quick_replies_list, QuickRepliesList),
    "quick_replies.add": (Session.quick_replies_add, QuickReplyAdd),
    "quick_replies.update": (Session.quick_replies_update, QuickReplyUpdate),
    "quick_replies.delete": (Session.quick_replies_delete, QuickReplyArg),
    "subscribe": (Session.subscribe, Subscribe),
    "messages.search": (Session.messages_search, MessagesSearch),
    "profiles.search": (Session.profiles_search, ProfilesSearch),
}


def _bad_frame(detail: str) -> dict[str, Any]:
    return {"type": "error", "code": "bad_frame", "detail": detail}


async def _authenticate(ctx: Context, conn: Conn) -> AgentConfig | None:
    """Read the auth frame; None after refusing it (close 4403, or 4400 if not JSON)."""
    with trio.move_on_after(AUTH_TIMEOUT_S):
        text = await conn.receive()
        try:
            value = decode_json(text)
            # no token holds bad text, and msgspec cannot match a key with a lone surrogate
            refuse_bad_text(value)
            auth = msgspec.convert(value, type=Auth)
        except (msgspec.ValidationError, InboxError):
            auth = Auth("", "")
        except NotJson:
            await conn.send(_bad_frame("not JSON"))
            await conn.close(4400, "not JSON")
            return None
        token = secret_matches(auth.token, ctx.agents) if auth.type == "auth" else None
        agent = None if token is None else ctx.agents[token]
        if agent is None or agent.role not in ALLOWED_ROLES:
            detail = "unknown token" if agent is None else f"role {agent.role!r} may not use the inbox"
            await conn.send({"type": "error", "code": "forbidden", "detail": detail})
            await conn.close(4403, "forbidden")
            return None
        await conn.send({"type": "ready", "agent": {"id": agent.id, "name": agent.name, "role": agent.role}})
        return agent
    await conn.close(4408, "no auth frame")
    return None


async def agent_endpoint(ctx: Context, ws: WebSocket) -> None:
    """The `/ws/agent` endpoint."""
    await ws.accept()
    conn = Conn(ws)
    try:
        inbox = ctx.inbox
        if inbox is None:
            await conn.close(1013, "starting")
            return
        agent = await _authenticate(ctx, conn)
        if agent is None:
            return
        session = Session(ctx, inbox, conn, agent)
        limit = trio.Semaphore(CONCURRENT_REQUESTS)
        async with trio.open_nursery() as nursery:
            session.nursery = nursery
            with _closed_ends():
                while True:
                    if not await _next_frame(session, conn, limit):
                        break
            nursery.cancel_scope.cancel()
    except Closed:
        pass


class _closed_ends:
    """Leave the block quietly when the peer went away."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, Closed)


async def _next_frame(session: Session, conn: Conn, limit: trio.Semaphore) -> bool:
    """Read and dispatch one frame; False when the connection is over."""
    try:
        text = await conn.receive()
    except TooBig:
        await conn.close(1009, "frame too big")
        return False
    if not conn.bucket.take():
        await conn.send({"type": "error", "code": "rate_limited", "detail": "too many frames"})
        return True
    try:
        frame = decode_json(text)
    except NotJson:
        await conn.send(_bad_frame("not JSON"))
        return True
    except InboxError as exc:
        await conn.send({"type": "error", **error_body(exc)})
        return True
    if not isinstance(frame, dict):
        await conn.send(_bad_frame("a request is a JSON object"))
        return True
    rid = frame.get("id")
    if not isinstance(rid, int) or isinstance(rid, bool):
        await conn.send(_bad_frame("a request needs an integer id"))
        return True
    await limit.acquire()
    session.nursery.start_soon(_run, session, frame, limit)
    return True


async def _run(session: Session, frame: dict[str, Any], limit: trio.Semaphore) -> None:
    try:
        await session.handle(frame)
    finally:
        limit.release()
