"""`GET /metrics`: the engine's gauges and counters, and latency histograms, in
Prometheus text format through prometheus-client.

Each app has a `Metrics` of its own, with its own `CollectorRegistry` (no global state:
one process may run several servers). The gauges and counters are read from the engine
at scrape time (with the webhook service's delivered, retried and failed counts); the
histograms are observed as things happen:

- ``tidings_commit_latency_seconds``: every `Engine.commit` (through its commit observer),
- ``tidings_first_response_seconds``: a ticket's first answer by an agent (R28),
- ``tidings_webhook_latency_seconds``: every ``POST /sms/inbound``, until it is answered.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from tidings.actors.inbox import Inbox
from tidings.transports.webhooks import Webhooks
from tidings.transports.wire import Context

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# first responses take minutes to days
_RESPONSE: Final = (30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)


class _EngineState(Collector):
    """The gauges and counters, read from the running inbox at scrape time."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store_latency = 0.0  # measured by `Metrics.render` just before the scrape
        self.webhooks: Webhooks | None = None

    def collect(self) -> Iterator[Metric]:
        inbox = self.ctx.inbox
        if inbox is None:
            return
        engine = inbox.engine
        rows: list[tuple[type[CounterMetricFamily | GaugeMetricFamily], str, str, float]] = [
            (CounterMetricFamily, "tidings_messages_in", "Inbound SMS and web chat messages.",
             inbox.inbound_count + self.ctx.chat_messages_in),
            (CounterMetricFamily, "tidings_messages_out", "Outbound messages sent by the courier.",
             inbox.courier.sent),
            (GaugeMetricFamily, "tidings_active_actors", "Actors resident in memory.",
             engine.resident),
            (GaugeMetricFamily, "tidings_mailbox_depth", "Messages waiting in actor mailboxes.",
             engine.mailbox_depth()),
            (GaugeMetricFamily, "tidings_timers_pending", "Timers set and not yet fired.",
             engine.timers.pending),
            (CounterMetricFamily, "tidings_dead_letters", "Messages given up on.",
             engine.dead_letters),
            (CounterMetricFamily, "tidings_actors_quarantined", "Actors quarantined for failing.",
             engine.quarantined),
            (GaugeMetricFamily, "tidings_event_seq", "The last agent event sequence number.",
             inbox.last_seq),
            (GaugeMetricFamily, "tidings_store_read_latency_seconds",
             "Latency of one store read, measured at scrape time.", self.store_latency),
        ]  # fmt: skip
        if self.webhooks is not None:
            rows += [
                (CounterMetricFamily, "tidings_webhooks_delivered",
                 "Webhook deliveries answered 2xx by the host platform.", self.webhooks.delivered),
                (CounterMetricFamily, "tidings_webhooks_retried",
                 "Webhook delivery attempts that failed and will be retried.", self.webhooks.retried),
                (CounterMetricFamily, "tidings_webhooks_failed",
                 "Webhook deliveries given up after 24 hours of failures.", self.webhooks.failed),
            ]  # fmt: skip
        placement, remote = engine.placement, engine.remote
        if placement is not None and remote is not None:
            rows += [
                (GaugeMetricFamily, "tidings_shards_owned", "Shards this node holds a lease on.",
                 len(placement.owned)),
                (CounterMetricFamily, "tidings_lease_renewals", "Shard leases renewed.",
                 placement.renewals),
                (CounterMetricFamily, "tidings_leases_lost",
                 "Shard leases found taken by another node when renewing them.",
                 placement.leases_lost),
                (CounterMetricFamily, "tidings_fenced_writes_refused",
                 "Writes refused because another node had taken their shard.", placement.fenced),
                (CounterMetricFamily, "tidings_forwarded_messages",
                 "Messages sent to actors on other nodes.", remote.forwarded),
                (CounterMetricFamily, "tidings_received_messages",
                 "Messages from other nodes taken from this node's shards.", remote.received),
            ]  # fmt: skip
        for family, name, help_, value in rows:
            yield family(name, help_, value=value)


class Metrics:
    """The metrics of one app. `watch` an inbox once it runs; `timed` wraps an endpoint
    whose latency is a histogram; `endpoint` answers `GET /metrics`."""

    def __init__(self, ctx: Context) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._state = _EngineState(ctx)
        self.registry.register(self._state)
        self.commit_latency = Histogram(
            "tidings_commit_latency_seconds", "Time for one commit to become durable.",
            registry=self.registry, buckets=_SECONDS,
        )  # fmt: skip
        self.webhook_latency = Histogram(
            "tidings_webhook_latency_seconds", "Time to store and answer an inbound SMS webhook.",
            registry=self.registry, buckets=_SECONDS,
        )  # fmt: skip
        self.first_response = Histogram(
            "tidings_first_response_seconds",
            "Time from a ticket's first inbound message to the first agent reply (R28).",
            registry=self.registry, buckets=_RESPONSE,
        )  # fmt: skip

    def watch(self, inbox: Inbox, webhooks: Webhooks | None = None) -> None:
        """Observe `inbox`'s commits and first responses, and count `webhooks`'
        deliveries, from now on."""
        inbox.engine.commit_observer = self.commit_latency.observe
        inbox.app.on_first_response = self.first_response.observe
        self._state.webhooks = webhooks

    def timed(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Any:
        """`endpoint`, its latency observed in the webhook histogram."""

        async def timed_endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                return await endpoint(request)
            finally:
                self.webhook_latency.observe(time.perf_counter() - started)

        timed_endpoint.__doc__ = endpoint.__doc__
        return timed_endpoint

    async def endpoint(self, request: Request) -> Response:
        """`GET /metrics`: Prometheus text format."""
        inbox = self._state.ctx.inbox
        if inbox is not None:
            started = time.perf_counter()
            await inbox.engine.store.get("settings")
            self._state.store_latency = time.perf_counter() - started
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)
