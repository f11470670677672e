"""Retention: the store keeps events for a while and idempotency keys until they expire.

Two kinds of data would otherwise grow forever:

- **Events** older than `events_kept_s` are dropped. Payloads carry no time, so the
  service keeps *marks*: every sweep it notes (wall time, last sequence number) in the
  key `retention:events`. Every event up to a mark's number was committed by the mark's
  time, so once a mark is older than `events_kept_s` the events up to its number are
  dropped. Events are kept at least `events_kept_s` and at most one sweep longer;
  `EventLog.oldest` is then the smallest number still kept.
- **Keys with an expiry**: the owner of a key writes it with `expire_at(batch, key, at)`
  in the same batch, which files it in the index `expiring` by that time; the sweep
  deletes due keys (and their index entries) through `Engine.commit`, as a store's TTL
  would. The key keeps its one owner: nobody else writes it, the sweep only forgets it.

The service (`Retention.run`) sweeps every `every` seconds under the engine's
supervisor. The dead-letter log is bounded by its writer (`DeadLetters`).

Several nodes on one store: the marks and the expiry deletes are written only by the node
holding the shard of `SERVICE`, through `Engine.commit` with that shard's fencing token
(`Engine.while_owned`), so a node paused past its lease cannot delete a key rewritten
since it read the index, nor rewrite the marks. The drop of old events is not a commit,
but dropping a prefix of the log is idempotent and a late one only drops events older
still. The other nodes learn from the store which events are gone
(`sweep(writes=False)`), for their `EventLog.oldest`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from tidings.engine.clock import WallClock
from tidings.engine.eventlog import EventLog
from tidings.engine.store.base import Batch, Store, StoreError

log = logging.getLogger("tidings.engine")

EXPIRING = "expiring"
"""The index of keys with an expiry: member = key, score = when it expires (epoch s)."""

MARKS = "retention:events"
"""The key of the event marks: a JSON list of [wall time, last sequence number]."""

EXPIRE_AT_ONCE = 500  # keys deleted per commit

SERVICE = ("retention", "service")
"""The address whose shard's owner writes the marks and expires keys (several nodes)."""


def expire_at(batch: Batch, key: str, at: float) -> None:
    """Have the retention service delete `key` at wall-clock time `at` (epoch seconds);
    call it in the batch that writes `key`."""
    batch.index(EXPIRING, key, at, frozenset())


class Retention:
    """The retention service of one engine (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        events: EventLog,
        clock: WallClock,
        commit: Callable[[Batch], Awaitable[Any]],
        *,
        events_kept_s: float,
        every: float,
    ) -> None:
        self._store = store
        self._events = events
        self._clock = clock
        self._commit = commit
        self.events_kept_s = events_kept_s
        self.every = every

    async def run(
        self,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        *,
        writes: bool = True,
    ) -> None:
        """Sweep now and then every `every` seconds (with `writes` false: only learn
        which events are gone, see `sweep`). A sweep the store refuses is tried
        again at the next one: housekeeping never takes the engine down."""
        task_status.started()
        while True:
            try:
                await self.sweep(writes=writes)
            except StoreError as exc:
                log.warning("retention sweep failed, next try in %g s: %s", self.every, exc)
            await trio.sleep(self.every)

    async def sweep(self, *, writes: bool = True) -> None:
        """Drop the events older than `events_kept_s` and delete the keys that expired.

        With several nodes on one store, only the node holding the shard of `SERVICE`
        sweeps with `writes` (fenced by that shard's token, `Engine.while_owned`); the
        others sweep without: they only learn from the store which events are gone
        (`EventLog.oldest`).
        """
        if not writes:
            first = await self._store.first_event_seq()
            if first > self._events.oldest:
                self._events.dropped(first - 1)
            return
        now = self._clock.now()
        await self._drop_old_events(now)
        await self._expire_keys(now)

    async def _drop_old_events(self, now: float) -> None:
        raw = await self._store.get(MARKS)
        marks: list[tuple[float, int]] = (
            msgspec.json.decode(raw, type=list[tuple[float, int]]) if raw else []
        )
        kept = list(marks)
        last = self._events.last_seq
        if last and (not kept or kept[-1][1] < last):
            kept.append((now, last))
        cutoff = now - self.events_kept_s
        old = [seq for at, seq in kept if at <= cutoff]
        if old:
            through = old[-1]
            kept = [(at, seq) for at, seq in kept if at > cutoff]
            if through >= self._events.oldest:
                await self._store.drop_events(through)
                self._events.dropped(through)
                log.info(
                    "dropped the events up to %d (older than %g s)", through, self.events_kept_s
                )
        if kept != marks:
            batch = Batch()
            batch.put(MARKS, msgspec.json.encode(kept))
            await self._commit(batch)

    async def _expire_keys(self, now: float) -> None:
        while True:
            rows = await self._store.index_query(
                EXPIRING, frozenset(), EXPIRE_AT_ONCE, descending=False
            )
            due = [key for key, at in rows if at <= now]
            if not due:
                return
            batch = Batch()
            for key in due:
                batch.delete(key)
                batch.unindex(EXPIRING, key)
            await self._commit(batch)
            if len(due) < EXPIRE_AT_ONCE:
                return
