"""Live web chat connections: where frames for a visitor's open connections go."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

BUFFER = 256  # frames a slow connection may fall behind before it is cut off


class Sessions:
    """The open connections of each web chat session, in this process.

    Frames are best effort: a connection that falls `BUFFER` frames behind is closed, and
    the widget reconnects and gets the ticket's messages again in `ready`.
    """

    def __init__(self) -> None:
        self._live: dict[str, set[trio.MemorySendChannel[dict[str, Any]]]] = {}
        # several nodes: also hands each frame to the other nodes, whose `deliver_here`
        # sends it to the session's connections there
        self.relay: Callable[[str, dict[str, Any]], None] | None = None

    def attach(
        self, session: str
    ) -> tuple[trio.MemorySendChannel[dict[str, Any]], trio.MemoryReceiveChannel[dict[str, Any]]]:
        """A new connection of `session`: frames for it arrive on the receive channel."""
        send, receive = trio.open_memory_channel[dict[str, Any]](BUFFER)
        self._live.setdefault(session, set()).add(send)
        return send, receive

    def detach(self, session: str, send: trio.MemorySendChannel[dict[str, Any]]) -> None:
        """The connection is gone."""
        live = self._live.get(session)
        if live is not None:
            live.discard(send)
            if not live:
                del self._live[session]
        send.close()

    def deliver(self, session: str, frame: dict[str, Any]) -> None:
        """Send `frame` to every open connection of `session` (on every node)."""
        self.deliver_here(session, frame)
        if self.relay is not None:
            self.relay(session, frame)

    def deliver_here(self, session: str, frame: dict[str, Any]) -> None:
        """Send `frame` to the connections of `session` on this node."""
        for send in list(self._live.get(session, ())):
            try:
                send.send_nowait(frame)
            except (trio.WouldBlock, trio.ClosedResourceError):
                self.detach(session, send)

    def connections(self, session: str) -> int:
        """How many connections `session` has open here."""
        return len(self._live.get(session, ()))
