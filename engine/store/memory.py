"""`MemoryStore`: the store in plain Python structures, for tests and the benchmarks' baseline."""

from __future__ import annotations

import bisect
import heapq
import math
from collections import defaultdict

from tidings.engine.store.base import Batch, Claimed, DueTimer, StoreError
from tidings.engine.store.schema import SCHEMA_VERSION
from tidings.engine.store.text import words

_NO_TAGS: frozenset[str] = frozenset()  # each `frozenset()` call makes a new one


def _refuse_nan(batch: Batch) -> None:
    """`StoreError` when a score or a due time of `batch` is NaN (it would sort nowhere)."""
    for entry in batch._index_puts or ():
        if math.isnan(entry.score):
            raise StoreError("batch refused: NaN score")
    for text in (batch._text_puts or {}).values():
        if math.isnan(text.score):
            raise StoreError("batch refused: NaN score")
    for due, _ in (batch._timers or {}).values():
        if math.isnan(due):
            raise StoreError("batch refused: NaN due time")


class MemoryStore:
    """A `Store` that keeps everything in memory; `commit` is atomic and immediate.

    It starts empty, so its `schema_version` is always this release's."""

    def __init__(self) -> None:
        self._kv: dict[str, bytes] = {}
        self._logs: defaultdict[str, list[bytes]] = defaultdict(list)
        self._events: list[bytes] = []
        self._dropped = 0  # events dropped from the front: `_events[0]` has seq _dropped + 1
        self._timers: dict[str, tuple[float, bytes]] = {}
        # a sorted index as two maps, member → score and member → tags: an entry keeps no
        # tuple of its own, which the garbage collector would scan at every collection of
        # its generation as long as the entry lives (one per idempotency key, so per
        # inbound message); an entry without tags shares `_NO_TAGS`
        self._scores: defaultdict[str, dict[str, float]] = defaultdict(dict)
        self._tags: defaultdict[str, dict[str, frozenset[str]]] = defaultdict(dict)
        # a member's words as the tuple the batch brought: a tuple of strings is left
        # alone by the garbage collector (a frozenset is scanned at every full collection)
        self._texts: defaultdict[str, dict[str, tuple[float, tuple[str, ...]]]] = defaultdict(dict)
        self._closed = False
        self.schema_version = SCHEMA_VERSION
        self.fail_writes = False  # tests set this to see failed writes surface

    def _check(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _check_write(self) -> None:
        self._check()
        if self.fail_writes:
            raise StoreError("write refused (fail_writes is set)")

    async def commit(self, batch: Batch) -> list[int]:
        # Applied at once, without a checkpoint: commits apply in call order, as the
        # protocol wants, and a turn that commits pays no task switch for it. This store
        # has no I/O to wait for; like its reads, a commit is not a checkpoint, so a
        # cancelled caller's commit applies and its next checkpoint raises. It reads the
        # batch's slots, skipping the kinds of writes the batch has none of (None).
        self._check_write()
        _refuse_nan(batch)
        kv = self._kv
        claims = batch._claims
        if claims:
            for key in claims:
                if key in kv:
                    raise Claimed(key, kv[key])
        if batch._deletes:
            for key in batch._deletes:
                kv.pop(key, None)
        if claims:
            kv.update(claims)
        if batch._puts:
            kv.update(batch._puts)
        if batch._appends:
            logs = self._logs
            for stream, record in batch._appends:
                logs[stream].append(record)
        if batch._timer_deletes:
            for key in batch._timer_deletes:
                self._timers.pop(key, None)
        if batch._timers:
            self._timers.update(batch._timers)
        if batch._index_deletes:
            for index, member in batch._index_deletes:
                self._scores[index].pop(member, None)
                self._tags[index].pop(member, None)
        if batch._index_puts:
            scores, tags = self._scores, self._tags
            for entry in batch._index_puts:
                scores[entry.index][entry.member] = entry.score
                tags[entry.index][entry.member] = entry.tags or _NO_TAGS
        if batch._text_deletes:
            for index, member in batch._text_deletes:
                self._texts[index].pop(member, None)
        if batch._text_puts:
            texts = self._texts
            for text in batch._text_puts.values():
                texts[text.index][text.member] = (text.score, text.words)
        events = batch._events
        if not events:
            return []
        first = self._dropped + len(self._events) + 1
        self._events += events
        return list(range(first, first + len(events)))

    async def get(self, key: str) -> bytes | None:
        self._check()
        return self._kv.get(key)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return [self._kv.get(k) for k in keys]

    async def log_tail(self, stream: str, n: int) -> list[bytes]:
        self._check()
        log = self._logs.get(stream, [])
        return log[-n:] if n > 0 else []

    async def log_length(self, stream: str) -> int:
        self._check()
        return len(self._logs.get(stream, []))

    async def events_since(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        self._check()
        start = max(seq - self._dropped, 0)
        found = self._events[start : start + limit]
        return [(i + 1, e) for i, e in enumerate(found, self._dropped + start)]

    async def last_event_seq(self) -> int:
        self._check()
        return self._dropped + len(self._events)

    async def first_event_seq(self) -> int:
        self._check()
        return self._dropped + 1

    async def drop_events(self, through: int) -> None:
        self._check_write()
        gone = min(max(through - self._dropped, 0), len(self._events))
        del self._events[:gone]
        self._dropped += gone

    async def trim_log(self, stream: str, keep: int) -> None:
        self._check_write()
        log = self._logs.get(stream)
        if log is not None and len(log) > keep:
            del log[: len(log) - max(keep, 0)]

    async def due_timers(self, until: float, limit: int) -> list[DueTimer]:
        self._check()
        due = ((d, k, p) for k, (d, p) in self._timers.items() if d <= until)
        return [DueTimer(k, d, p) for d, k, p in heapq.nsmallest(limit, due)]

    async def next_timer_due(self) -> float | None:
        self._check()
        return min((d for d, _ in self._timers.values()), default=None)

    async def index_query(
        self,
        index: str,
        tags: frozenset[str],
        limit: int,
        *,
        descending: bool = True,
        after: tuple[float, str] | None = None,
    ) -> list[tuple[str, float]]:
        self._check()
        rows = sorted(
            (score, member)
            for member, score in self._scores.get(index, {}).items()
            if tags <= self._tags[index][member]
        )
        if descending:
            rows.reverse()
            if after is not None:
                rows = [r for r in rows if r < after]
        elif after is not None:
            rows = rows[bisect.bisect_right(rows, after) :]
        return [(m, s) for s, m in rows[:limit]]

    async def text_query(
        self, index: str, query: str, limit: int, *, after: tuple[float, str] | None = None
    ) -> list[tuple[str, float]]:
        self._check()
        wanted = frozenset(words(query))
        if not wanted or limit <= 0:
            return []
        rows = sorted(
            ((score, member) for member, (score, have) in self._texts.get(index, {}).items()
             if wanted.issubset(have)),
            reverse=True,
        )  # fmt: skip
        if after is not None:
            rows = [r for r in rows if r < after]
        return [(m, s) for s, m in rows[:limit]]

    async def index_count(self, index: str, tags: frozenset[str]) -> int:
        self._check()
        return sum(1 for have in self._tags.get(index, {}).values() if tags <= have)

    async def aclose(self) -> None:
        self._closed = True
