"""What both WebSocket endpoints need: sending from several tasks, frame reading with
the size limit, and a per-connection rate limit."""

from __future__ import annotations

from typing import Any

import msgspec
import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from tidings.transports.wire import MAX_FRAME

__all__ = ["Conn", "TokenBucket", "Closed", "TooBig"]

RATE = 50.0  # frames per second a connection may keep up
BURST = 100.0  # frames it may send at once


class Closed(Exception):
    """The peer went away."""


class TooBig(Exception):
    """A frame over `MAX_FRAME` bytes."""


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take` says whether one was left.

    Time is trio's clock (`trio.current_time`), so a test's MockClock refills it."""

    def __init__(self, rate: float = RATE, burst: float = BURST) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = trio.current_time()

    def take(self) -> bool:
        """Spend a token if there is one."""
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Conn:
    """A WebSocket that tasks may send on concurrently.

    It takes no lock of its own: hypercorn encodes each frame whole, without yielding,
    and writes it under its connection's send lock, which is first come, first served,
    so concurrent frames go out whole and in the order sent. (A lock here cost a trip
    through trio's scheduler on every frame.)"""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.bucket = TokenBucket()
        self.closed = False

    async def send(self, frame: Any) -> None:
        """Send `frame` (a dict, Struct or pre-encoded JSON bytes) as a text frame."""
        if self.closed:
            raise Closed
        data = frame if isinstance(frame, bytes) else msgspec.json.encode(frame)
        try:
            await self.ws.send({"type": "websocket.send", "text": data.decode()})
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.closed = True
            raise Closed from None

    async def receive(self) -> str:
        """The next frame's text (binary frames are decoded as UTF-8, or refused)."""
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.closed = True
            raise Closed from None
        if message["type"] == "websocket.disconnect":
            self.closed = True
            raise Closed
        text = message.get("text")
        if text is None:
            raw = message.get("bytes") or b""
            if len(raw) > MAX_FRAME:
                raise TooBig
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return "\x00not json"
        if len(text) > MAX_FRAME // 4 and len(text.encode()) > MAX_FRAME:
            raise TooBig
        return str(text)

    async def close(self, code: int, reason: str = "") -> None:
        """Close with `code`, once."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.ws.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
