"""`/ws/chat`: a web chat visitor. `hello` first, then messages, typing and pings; the
inbox pushes agent messages and `closed` frames through `inbox.sessions`."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import msgspec
import trio
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from tidings.actors.errors import InboxError
from tidings.actors.inbox import Inbox
from tidings.transports.wire import (
    MAX_DEPTH,
    Context,
    NotJson,
    decode_json,
    refuse_bad_text,
    validation_error,
)
from tidings.transports.ws_common import Closed, Conn, TooBig

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 30.0
CLOSE_CODES = {"rate_limited": 4429, "forbidden": 4403}  # a refused hello; others 4400


class Visitor(msgspec.Struct):
    """Who the visitor says they are."""

    email: str | None = None
    name: str | None = None
    phone: str | None = None


class Identity(msgspec.Struct, forbid_unknown_fields=True):
    """Who the brand's site says the visitor is (one of the two), with `signature`."""

    email: str | None = None
    phone: str | None = None


class HelloFrame(msgspec.Struct, tag_field="type", tag="hello"):
    """The first frame."""

    session: str | None = None
    visitor: Visitor = msgspec.field(default_factory=Visitor)
    identity: Identity | None = None
    signature: str | None = None


def verified_identity(ctx: Context, frame: HelloFrame) -> tuple[Any, str] | None:
    """The (kind, value) a hello's signed `identity` proves; None without one. Raises
    `forbidden` for a signature that is wrong, or that nothing can check (no secret)."""
    if frame.identity is None and frame.signature is None:
        return None
    given = frame.identity or Identity()
    pairs = [(k, v) for k, v in (("email", given.email), ("phone", given.phone)) if v]
    if len(pairs) != 1:
        raise InboxError("bad_request", "identity: give one of email or phone")
    secret = ctx.config.chat.identity_secret
    if not secret:
        raise InboxError("forbidden", "identity: this server verifies no identities")
    kind, value = pairs[0]
    expected = hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), (frame.signature or "").lower().encode()):
        raise InboxError("forbidden", "signature: does not match the identity")
    return kind, value


class MessageFrame(msgspec.Struct, tag_field="type", tag="message"):
    """The visitor wrote."""

    body: str
    client_id: str | None = None


class TypingFrame(msgspec.Struct, tag_field="type", tag="typing"):
    """The visitor is typing."""


class PingFrame(msgspec.Struct, tag_field="type", tag="ping"):
    """Keep-alive; answered with `pong`."""


ChatFrame = HelloFrame | MessageFrame | TypingFrame | PingFrame


def _error(code: str, detail: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail}


_decode_typed = msgspec.json.Decoder(ChatFrame).decode


def _decode(text: str) -> ChatFrame:
    """A frame; raises `NotJson`, `bad_request` (too deep, bad text) or a validation error.

    Most frames take one typed decode (a fiftieth of the general path's time): without a
    `\\u` escape the text holds no NUL or lone surrogate (raw, neither is JSON, nor in text
    read as UTF-8), and with at most `MAX_DEPTH` brackets it nests no deeper. A frame it
    refuses, or that may hold either, takes the general path, which names the error."""
    if "\\u" not in text and text.count("{") + text.count("[") <= MAX_DEPTH:
        try:
            return _decode_typed(text)
        except (msgspec.DecodeError, UnicodeEncodeError):
            pass
    value = decode_json(text)
    refuse_bad_text(value)
    return msgspec.convert(value, type=ChatFrame)


async def _hello(ctx: Context, conn: Conn, inbox: Inbox, address: str) -> str | None:
    """Read `hello`, answer `ready` (and the greeting); the session, or None after 4400."""
    deadline = trio.current_time() + HELLO_TIMEOUT_S
    frame: ChatFrame | None = None
    while True:
        text: str | None = None
        with trio.move_on_at(deadline):
            text = await conn.receive()
        if text is None:
            await conn.close(4400, "no hello")
            return None
        try:
            frame = _decode(text)
        except InboxError as exc:
            # JSON with a value the server cannot use (too deep, NUL): a bad value keeps
            # the connection (contract v3); the client may say hello again.
            await conn.send(_error(exc.code, exc.detail))
            continue
        except (NotJson, msgspec.ValidationError):
            frame = None
        break
    if not isinstance(frame, HelloFrame):
        await conn.send(_error("bad_frame", "the first frame must be hello"))
        await conn.close(4400, "hello first")
        return None
    v = frame.visitor
    try:
        ready = await inbox.chat_hello(
            frame.session, email=v.email, name=v.name, phone=v.phone,
            identity=verified_identity(ctx, frame),
            may_start=lambda: ctx.addresses.start_session(address),
        )  # fmt: skip
    except InboxError as exc:
        await conn.send(_error(exc.code, exc.detail))
        await conn.close(CLOSE_CODES.get(exc.code, 4400), exc.code)
        return None
    await conn.send(
        {
            "type": "ready",
            "session": ready.session,
            "profile": ready.profile,
            "ticket": ready.ticket,
            "messages": ready.messages,
        }
    )
    if ready.greeting is not None:
        await conn.send({"type": "message", "message": ready.greeting})
    return ready.session


async def _push(conn: Conn, frames: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
    """Frames from the inbox to the visitor; a connection cut off for lagging is closed."""
    try:
        async for frame in frames:
            await conn.send(frame)
        await conn.close(1013, "fell behind")
    except Closed:
        pass


async def _frame(ctx: Context, conn: Conn, inbox: Inbox, session: str, text: str) -> None:
    """Handle one frame after hello."""
    try:
        frame = _decode(text)
    except msgspec.ValidationError as exc:
        await conn.send(_error("bad_frame", validation_error(exc).detail))
        return
    except InboxError as exc:
        await conn.send(_error(exc.code, exc.detail))
        return
    except NotJson:
        await conn.send(_error("bad_frame", "not JSON"))
        await conn.close(4400, "not JSON")
        raise Closed from None
    try:
        if isinstance(frame, MessageFrame):  # message and typing count as seen themselves
            message = await inbox.chat_message(session, frame.body, frame.client_id)
            ctx.chat_messages_in += 1
            await conn.send({"type": "ack", "client_id": frame.client_id, "message": message})
        elif isinstance(frame, TypingFrame):
            await inbox.chat_typing(session)
        elif isinstance(frame, PingFrame):
            await inbox.chat_seen(session)
            await conn.send({"type": "pong"})
        else:
            await inbox.chat_seen(session)
            await conn.send(_error("bad_frame", "hello was already said"))
    except InboxError as exc:
        await conn.send(_error(exc.code, exc.detail))


def _origin_allowed(ctx: Context, ws: WebSocket) -> bool:
    """Whether the page that opens this socket may: no Origin (not a browser), the
    server's own origin, or one of `chat.allowed_origins`."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    origin = origin.lower().rstrip("/")
    host = ws.headers.get("host", "").lower()
    own = {f"http://{host}", f"https://{host}", ctx.public_base.lower()}
    return origin in own or origin in ctx.config.chat.allowed_origins


async def chat_endpoint(ctx: Context, ws: WebSocket) -> None:
    """The `/ws/chat` endpoint."""
    if not _origin_allowed(ctx, ws):
        detail = "this page's origin may not open the chat"
        await ws.send_denial_response(
            JSONResponse({"error": {"code": "forbidden", "detail": detail}}, status_code=403)
        )
        return
    await ws.accept()
    conn = Conn(ws)
    inbox = ctx.inbox
    if inbox is None:
        await conn.close(1013, "starting")
        return
    try:
        session = await _hello(ctx, conn, inbox, ctx.address_of(ws))
    except TooBig:
        await conn.close(1009, "frame too big")
        return
    except Closed:
        return
    if session is None:
        return
    send, receive = inbox.sessions.attach(session)
    try:
        await inbox.chat_connected(session)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_push, conn, receive)
            try:
                while True:
                    text = await conn.receive()
                    if not conn.bucket.take():
                        await conn.send(_error("rate_limited", "too many frames"))
                        continue
                    await _frame(ctx, conn, inbox, session, text)
            except TooBig:
                await conn.close(1009, "frame too big")
            except Closed:
                pass
            nursery.cancel_scope.cancel()
    finally:
        inbox.sessions.detach(session, send)
        with trio.CancelScope(shield=True):
            try:
                await inbox.chat_disconnected(session)
            except Exception:  # the engine may be stopping
                log.debug("chat_disconnected failed", exc_info=True)
