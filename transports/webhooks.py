"""Outbound webhooks to the host platform (PROTOCOL.md, contract v3, *Team workflow*).

Every stored event that a `[[webhooks]]` entry wants is POSTed to its URL as
`{"id","event","seq","data","created_at"}`, signed with `X-Tidings-Signature:
sha256=<hex HMAC-SHA256(secret, raw body)>`, and retried with exponential backoff (1 s,
doubling up to 10 minutes) until a `2xx` answer, for at least 24 hours.

Durability: a consumer tails the event log from a durable cursor. For each run of events
it writes one pending delivery per (event, webhook that wants it) and the new cursor in
one batch, through `Engine.commit`. An event is committed before it is seen here, so a
kill -9 between the two leaves the cursor behind the event and the consumer writes the
delivery on the next start; a delivery is removed (or rescheduled) in the batch that
records the attempt's outcome, so a crash after a `2xx` and before that commit sends it
again with the same `id` (at least once; receivers deduplicate by
`X-Tidings-Delivery`). The body is stored with the delivery, so every retry sends the
same bytes; it is signed at each attempt with the webhook's current secret.

Isolation: the inbox never waits for this service. The consumer only reads the event log
(which publishes to readers without waiting for them), and each webhook has its own
scheduler and `concurrency` senders, each attempt bounded by `timeout_s`, so a slow or
dead receiver holds only its own senders.

Keys (this service is their only writer): `webhooks:cursor` (the consumer's cursor, and for
each webhook the last event before it was added), `webhook:{delivery id}` (a pending delivery) and
the index `webhooks` (pending deliveries by next attempt time, tagged `hook=<webhook>`).

Several nodes on one store: the service delivers only on the node that holds the shard of
`SERVICE` (as an actor would run there, `Engine.while_owned`), so an event is not delivered
once per node; it starts there from the stored cursor when the shard arrives and stops when
it leaves. Its writes carry the shard's fencing token, so a node that lost the shard (paused
past its lease, say) cannot move the cursor or a delivery back. While a shard moves two
nodes may briefly both POST a delivery: a delivery is at least once, with its id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import trio

from tidings.actors.inbox import Inbox
from tidings.actors.model import iso
from tidings.actors.thread import new_id
from tidings.engine import Batch, Child, Supervisor
from tidings.transports.config import WebhookConfig
from tidings.transports.release import version

__all__ = ["Webhooks", "running_webhooks", "signature", "retry_delay"]

log = logging.getLogger("tidings.webhooks")

CURSOR_KEY = "webhooks:cursor"
PENDING = "webhooks"  # index of pending deliveries, scored by next attempt (wall clock)
TIMEOUT_S = 10.0  # no answer in this time is a failed attempt
FIRST_RETRY_S = 1.0  # "first retry within 2 s"
MAX_RETRY_S = 600.0  # "doubling up to 10 minutes"
RETRY_FOR_S = 86_400.0  # "for at least 24 hours"
BATCH = 500  # events turned into deliveries per commit, at most
CURSOR_EVERY = 1000  # events nobody wants that may pass before the cursor is saved
SERVICE = ("webhooks", "service")  # the address whose shard's owner delivers
OWNER_POLL_S = 0.5  # how often a node checks whether it holds that shard


def signature(secret: str, body: bytes) -> str:
    """The `X-Tidings-Signature` of `body`: `sha256=<hex HMAC-SHA256(secret, body)>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(failures: int) -> float:
    """Seconds before the next attempt after `failures` failed ones (1, 2, 4, … 600)."""
    return min(FIRST_RETRY_S * 2.0 ** min(failures - 1, 30), MAX_RETRY_S)


def _hook_id(url: str) -> str:
    """A webhook's stored name: its URL's hash (URLs are unique in the config)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _key(delivery: str) -> str:
    return f"webhook:{delivery}"


class _Cursor(msgspec.Struct):
    """What `CURSOR_KEY` holds: every event up to `seq` has its deliveries written;
    `after[hook]` is the last event before that webhook was added (it wants later ones)."""

    seq: int
    after: dict[str, int]


class _Logged(msgspec.Struct):
    """An event as the log holds it."""

    event: str
    data: msgspec.Raw


class _Body(msgspec.Struct):
    """What is POSTed."""

    id: str
    event: str
    seq: int
    data: msgspec.Raw
    created_at: str


class _Pending(msgspec.Struct):
    """A delivery not yet answered with `2xx`: its webhook, event name and body, when it
    was first written (its 24 hours run from there), how many attempts failed, and when
    the next one is due (its score in `PENDING`)."""

    hook: str
    event: str
    body: msgspec.Raw
    first_at: float
    failures: int = 0
    next_at: float = 0.0


class _Hook:
    """A configured webhook and its scheduler's wake-up."""

    def __init__(self, config: WebhookConfig) -> None:
        self.id = _hook_id(config.url)
        self.url = config.url
        self.secret = config.secret
        self.events = frozenset(config.events)
        self.tag = frozenset({f"hook={self.id}"})
        self.wake = trio.Event()

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


class Webhooks:
    """Delivers `hooks` for `inbox`; `delivered`, `retried` and `failed` count attempts
    answered `2xx`, attempts that failed and will be retried, and deliveries given up
    after 24 hours of failures."""

    def __init__(
        self,
        hooks: list[WebhookConfig],
        inbox: Inbox,
        *,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = TIMEOUT_S,
        concurrency: int = 4,
    ) -> None:
        self._hooks = {h.id: h for h in map(_Hook, hooks)}
        self._inbox = inbox
        self._client = client
        self._owns_client = client is None
        self._timeout_s = timeout_s
        self._concurrency = concurrency
        self._in_flight: set[str] = set()
        self.delivered = 0
        self.retried = 0
        self.failed = 0

    # -- the consumer: events to pending deliveries -----------------------------------------

    async def _start_cursor(self, only_if_none: bool = False) -> _Cursor:
        """The stored cursor, with the webhooks of the config: a new one wants the events
        from now on, one no longer configured is forgotten (with `only_if_none`, nothing
        is written over a stored cursor)."""
        raw = await self._inbox.engine.store.get(CURSOR_KEY)
        last = self._inbox.last_seq
        stored = msgspec.json.decode(raw, type=_Cursor) if raw else None
        seq = stored.seq if stored else last
        before = stored.after if stored else {}
        cursor = _Cursor(seq, {h: before.get(h, last) for h in self._hooks})
        if cursor != stored and not (only_if_none and stored):
            batch = Batch()
            batch.put(CURSOR_KEY, msgspec.json.encode(cursor))
            await self._inbox.engine.commit(batch)
        return cursor

    async def _read(self, since: int, send: trio.MemorySendChannel[tuple[int, bytes]]) -> None:
        async for seq, payload in self._inbox.events(since):
            await send.send((seq, payload))

    async def _consume(
        self, cursor: _Cursor, receive: trio.MemoryReceiveChannel[tuple[int, bytes]]
    ) -> None:
        """Write a pending delivery for each event and webhook that wants it, and the
        cursor, in one batch per run of events."""
        saved = cursor.seq
        while True:
            events = [await receive.receive()]
            while len(events) < BATCH:
                try:
                    events.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            batch = Batch()
            now = self._inbox.engine.clock.now()
            woken: set[_Hook] = set()
            for seq, payload in events:
                logged = msgspec.json.decode(payload, type=_Logged)
                for hook in self._hooks.values():
                    if seq > cursor.after[hook.id] and hook.wants(logged.event):
                        self._add(batch, hook, seq, logged, now)
                        woken.add(hook)
            cursor.seq = events[-1][0]
            if woken or cursor.seq - saved >= CURSOR_EVERY:
                batch.put(CURSOR_KEY, msgspec.json.encode(cursor))
                await self._inbox.engine.commit(batch)
                saved = cursor.seq
            for hook in woken:
                hook.wake.set()

    @staticmethod
    def _add(batch: Batch, hook: _Hook, seq: int, logged: _Logged, now: float) -> None:
        delivery = new_id("wh", now)
        body = msgspec.json.encode(_Body(delivery, logged.event, seq, logged.data, iso(now)))
        pending = _Pending(hook.id, logged.event, msgspec.Raw(body), now, next_at=now)
        batch.put(_key(delivery), msgspec.json.encode(pending))
        batch.index(PENDING, delivery, now, hook.tag)

    # -- the senders: pending deliveries to the receivers -----------------------------------

    async def _schedule(self, hook: _Hook) -> None:
        """Hand `hook`'s due deliveries to its senders, earliest first, as they free up."""
        send, receive = trio.open_memory_channel[str](0)
        store, clock = self._inbox.engine.store, self._inbox.engine.clock
        async with trio.open_nursery() as nursery:
            for _ in range(self._concurrency):
                nursery.start_soon(self._sender, hook, receive)
            while True:
                hook.wake = trio.Event()
                now = clock.now()
                rows = await store.index_query(
                    PENDING, hook.tag, 100 + self._concurrency, descending=False
                )
                next_due, handed = math.inf, False
                for delivery, due in rows:
                    if delivery in self._in_flight:
                        continue
                    if due > now:
                        next_due = due
                        break
                    self._in_flight.add(delivery)
                    await send.send(delivery)
                    handed = True
                if handed:
                    continue
                with trio.move_on_after(min(next_due - now, MAX_RETRY_S)):
                    await hook.wake.wait()

    async def _sender(self, hook: _Hook, receive: trio.MemoryReceiveChannel[str]) -> None:
        async for delivery in receive:
            try:
                await self._attempt(hook, delivery)
            finally:
                self._in_flight.discard(delivery)
                hook.wake.set()

    async def _attempt(self, hook: _Hook, delivery: str) -> None:
        """POST one delivery and record the outcome: removed when answered `2xx` or
        after 24 hours of failures, else rescheduled after the backoff."""
        engine = self._inbox.engine
        raw = await engine.store.get(_key(delivery))
        if raw is None:
            return
        pending = msgspec.json.decode(raw, type=_Pending)
        if pending.next_at > engine.clock.now():
            return  # rescheduled since the scheduler read the index: not due yet
        problem = await self._post(hook, delivery, pending)
        now = engine.clock.now()
        batch = Batch()
        if problem is None:
            self.delivered += 1
        elif now - pending.first_at >= RETRY_FOR_S:
            self.failed += 1
            log.error("webhook %s: delivery %s given up after %d attempts: %s",
                      hook.url, delivery, pending.failures + 1, problem)  # fmt: skip
        else:
            self.retried += 1
            pending.failures += 1
            delay = retry_delay(pending.failures)
            pending.next_at = now + delay
            log.warning("webhook %s: delivery %s failed (%s), next try in %g s",
                        hook.url, delivery, problem, delay)  # fmt: skip
            batch.put(_key(delivery), msgspec.json.encode(pending))
            batch.index(PENDING, delivery, pending.next_at, hook.tag)
            await engine.commit(batch)
            return
        batch.delete(_key(delivery))
        batch.unindex(PENDING, delivery)
        await engine.commit(batch)

    async def _post(self, hook: _Hook, delivery: str, pending: _Pending) -> str | None:
        """POST the delivery once; None when answered `2xx`, else what went wrong."""
        assert self._client is not None
        body = bytes(pending.body)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"tidings/{version()}",
            "X-Tidings-Event": pending.event,
            "X-Tidings-Delivery": delivery,
            "X-Tidings-Signature": signature(hook.secret, body),
        }
        with trio.move_on_after(self._timeout_s):
            try:
                answer = await self._client.post(hook.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
            if 200 <= answer.status_code < 300:
                return None
            return f"answered {answer.status_code}"
        return f"no answer in {self._timeout_s:g} s"

    # -- the service ------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled, on the node that holds `SERVICE`'s shard, every write
        fenced by the shard's token (with no webhook configured: forget the old ones and
        return)."""
        engine = self._inbox.engine
        if not self._hooks or engine.placement is None:
            await self._deliver(task_status)
            return
        # on a store without a cursor yet, the webhooks want the events from this first
        # start on, not from when the service's shard arrives (written by whichever node
        # comes first; the owner's fenced writes take over from there)
        await self._start_cursor(only_if_none=True)
        task_status.started()
        await engine.while_owned(SERVICE, self._deliver, poll=OWNER_POLL_S)

    async def _deliver(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cursor = await self._start_cursor()
        if not self._hooks:
            task_status.started()
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        self._in_flight.clear()
        send, receive = trio.open_memory_channel[tuple[int, bytes]](BATCH)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, cursor.seq, send)
            nursery.start_soon(self._consume, cursor, receive)
            for hook in self._hooks.values():
                nursery.start_soon(self._schedule, hook)
            task_status.started()

    async def aclose(self) -> None:
        """Close the HTTP client, if this service made it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None


@asynccontextmanager
async def running_webhooks(
    hooks: list[WebhookConfig], inbox: Inbox, **options: Any
) -> AsyncIterator[Webhooks]:
    """Run the webhook service for `inbox`, supervised, while the block runs; `options`
    are `Webhooks`' keyword arguments."""
    webhooks = Webhooks(hooks, inbox, **options)
    supervisor = Supervisor([Child("webhooks", webhooks.run, restart="transient")], name="webhooks")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            try:
                yield webhooks
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await webhooks.aclose()
