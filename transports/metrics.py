"""`GET /metrics`: the engine's gauges and counters in Prometheus text format."""

from __future__ import annotations

import time

from tidings.transports.wire import Context

__all__ = ["render"]


def _line(lines: list[str], name: str, kind: str, help_: str, value: float) -> None:
    lines.append(f"# HELP {name} {help_}")
    lines.append(f"# TYPE {name} {kind}")
    lines.append(f"{name} {value:g}")


async def render(ctx: Context) -> str:
    """The metrics text; empty gauges while the engine starts."""
    inbox = ctx.inbox
    lines: list[str] = []
    if inbox is None:
        return "# the engine is starting\n"
    engine = inbox.engine
    started = time.perf_counter()
    await engine.store.get("settings")
    store_latency = time.perf_counter() - started
    _line(lines, "tidings_messages_in_total", "counter", "Inbound SMS and web chat messages.",
          inbox.inbound_count + ctx.chat_messages_in)
    _line(lines, "tidings_messages_out_total", "counter", "Outbound messages sent by the courier.",
          inbox.courier.sent)
    _line(lines, "tidings_active_actors", "gauge", "Actors resident in memory.", engine.resident)
    _line(lines, "tidings_mailbox_depth", "gauge", "Messages waiting in actor mailboxes.",
          engine.mailbox_depth())
    _line(lines, "tidings_timers_pending", "gauge", "Timers set and not yet fired.",
          engine.timers.pending)
    _line(lines, "tidings_dead_letters_total", "counter", "Messages given up on.",
          engine.dead_letters)
    _line(lines, "tidings_actors_quarantined_total", "counter", "Actors quarantined for failing.", engine.quarantined)
    _line(lines, "tidings_event_seq", "gauge", "The last agent event sequence number.",
          inbox.last_seq)
    _line(lines, "tidings_store_read_latency_seconds", "gauge",
          "Latency of one store read, measured at scrape time.", store_latency)
    return "\n".join(lines) + "\n"
