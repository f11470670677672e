"""The event log as subscribers see it: gap-free sequence numbers, replay, then live.

Events are written by actors inside their batches (`Batch.event`), so an event exists
exactly when the change it reports is durable. `Engine.commit` then tells this log the
numbers it got. Commits can finish out of order (group commit), so the log publishes only
the contiguous prefix: a subscriber never sees seq 7 before seq 6. Recent payloads are
kept in memory; older ones, and any a crashed writer did not announce, are read back from
the store.

Two more kinds of news pass through here:

- A *live-only* event (`announce`) is never stored and has no sequence number: it goes
  to the subscribers connected at that moment, as ``(None, payload)``, and is never
  replayed. It takes no number, so the stored events stay gap-free.
- Retention (`retention.Retention`) drops the oldest events from the store; `oldest` is
  the smallest sequence number still kept, and a replay from before it starts there.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator

import trio

from tidings.engine.store.base import Store

LIVE_BACKLOG = 1000
"""Live-only events a slow subscriber may have waiting; beyond it, the oldest are lost."""
REPLAY_BATCH = 1000
"""Stored events read at a time."""


class EventLog:
    """Publishes committed events to subscribers in sequence order, without gaps, and
    live-only events to the subscribers connected when they happen."""

    def __init__(self, store: Store, *, keep: int = 50_000, gap_wait: float = 1.0) -> None:
        self._store = store
        self._keep = keep
        self._gap_wait = gap_wait
        self._recent: OrderedDict[int, bytes] = OrderedDict()
        self._contiguous = 0  # every event up to here is known
        self._highest = 0
        self._oldest = 1
        # each subscriber's waiting live-only events, as (last seq when announced, payload);
        # by id(), as a deque has no hash
        self._listeners: dict[int, deque[tuple[int, bytes]]] = {}
        self._lot = trio.lowlevel.ParkingLot()

    async def start(self) -> None:
        """Begin after the last event already in the store."""
        self._contiguous = self._highest = await self._store.last_event_seq()
        self._oldest = await self._store.first_event_seq()

    @property
    def last_seq(self) -> int:
        """The highest sequence number published so far."""
        return self._contiguous

    @property
    def oldest(self) -> int:
        """The smallest sequence number still kept (1 until retention drops events)."""
        return self._oldest

    def dropped(self, through: int) -> None:
        """Events up to `through` are gone from the store (called by retention)."""
        self._oldest = max(self._oldest, through + 1)

    def published(self, seqs: list[int], payloads: list[bytes]) -> None:
        """Record events just committed (called by `Engine.commit`)."""
        recent = self._recent
        for seq, payload in zip(seqs, payloads, strict=True):
            recent[seq] = payload
        if seqs[-1] > self._highest:
            self._highest = seqs[-1]
        contiguous = start = self._contiguous
        while contiguous + 1 in recent:
            contiguous += 1
        self._contiguous = contiguous
        while len(recent) > self._keep:
            # popitem(last=False) is O(1); next(iter(dict)) after many deletes from the
            # front of a plain dict scans the dead slots (9% of the pipeline's CPU)
            recent.popitem(last=False)
        # wakes the subscribers parked for it; a subscriber woken by an earlier commit
        # and not run yet is no longer parked (an empty lot's `unpark_all` still cost a
        # list, a generator and a KI-protected call, for nearly every commit)
        if contiguous != start and self._lot:
            self._lot.unpark_all()

    def announce(self, payload: bytes) -> None:
        """Push a live-only event to the subscribers connected now: not stored, no
        sequence number, never replayed."""
        if self._listeners:
            after = self._contiguous  # delivered after the events published before it
            for listener in self._listeners.values():
                listener.append((after, payload))
            self._lot.unpark_all()

    async def _read(self, after: int, upto: int) -> list[tuple[int, bytes]]:
        recent = self._recent
        try:
            return [(seq, recent[seq]) for seq in range(after + 1, upto + 1)]
        except KeyError:  # not all of them are still in memory
            return await self._store.events_since(after, upto - after)

    async def subscribe(self, since: int = 0) -> AsyncIterator[tuple[int | None, bytes]]:
        """Every event with seq > `since`, in order: first the stored ones, then live.

        Events older than `oldest` are gone: a replay from before it starts at `oldest`.
        Live-only events announced while subscribed come as ``(None, payload)``, after
        the stored events published before them.
        """
        last = since
        live: deque[tuple[int, bytes]] = deque(maxlen=LIVE_BACKLOG)
        self._listeners[id(live)] = live
        gap_until: float | None = None
        try:
            while True:
                while live and live[0][0] <= last:
                    yield None, live.popleft()[1]
                if last < self._contiguous:
                    last = max(last, self._oldest - 1)
                    upto = min(self._contiguous, last + REPLAY_BATCH)
                    if upto - last == REPLAY_BATCH:
                        # a long replay: a subscriber whose sends never wait (its peer
                        # gone) still meets a cancellation between batches
                        await trio.lowlevel.checkpoint()
                    if live and live[0][0] > last:
                        upto = min(upto, live[0][0])  # then the live one announced there
                    for seq, payload in await self._read(last, upto):
                        if seq > upto:
                            break
                        yield seq, payload
                        last = seq
                    last = max(last, upto)  # any still missing were dropped meanwhile
                    continue
                if self._highest <= self._contiguous:
                    gap_until = None
                    await self._lot.park()
                    continue
                # a gap: an event committed but not announced (its writer was cancelled)
                if gap_until is None:
                    gap_until = trio.current_time() + self._gap_wait
                with trio.move_on_at(gap_until):
                    await self._lot.park()
                if trio.current_time() >= gap_until and self._highest > self._contiguous:
                    await self._fill_gap()
                    gap_until = None
        finally:
            del self._listeners[id(live)]

    async def _fill_gap(self) -> None:
        rows = await self._store.events_since(self._contiguous, self._highest - self._contiguous)
        if rows:
            self.published([s for s, _ in rows], [p for _, p in rows])
