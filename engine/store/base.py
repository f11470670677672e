"""The `Store` protocol: what every storage backend of the engine offers.

A store holds, for the whole engine:

- a key/value space of byte strings (actor state snapshots, records, idempotency keys),
- append-only logs named by stream (e.g. the messages of one thread, the dead letters),
- sorted indexes with tags (e.g. tickets by last activity, filterable by state),
- the durable timer index (absolute wall-clock due times, paged in by due time),
- text indexes: members found by the words of their text (`text.words`), best score first,
- the event log: gap-free sequence numbers from 1, replayable from any number still kept.

Retention (the engine's `retention` service) may drop the oldest events and the oldest
records of a log (`drop_events`, `trim_log`); sequence numbers never go back.

Every write goes through `Store.commit(batch)`, which applies a `Batch` atomically and
returns only once the batch is durable. Backends may merge concurrent commits into one
transaction (group commit), but each batch is all-or-nothing and commits are applied in
the order in which `commit` was called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from tidings.engine.store.text import words

C = TypeVar("C")


class OpenedStore:
    """What stores that connect share: `await store.open()`, or `async with` to open it
    and close it again. Subclasses define `open` and `aclose`."""

    async def open(self) -> Self:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class StoreError(Exception):
    """A store could not carry out a read or a write; nothing of a failed batch is applied."""


class Claimed(StoreError):
    """A batch claimed `key` (`Batch.claim`) and the key exists: nothing of the batch is
    applied. `value` is what the key holds (e.g. the message an idempotency key names)."""

    def __init__(self, key: str, value: bytes) -> None:
        super().__init__(f"batch refused: {key!r} is already claimed")
        self.key = key
        self.value = value


class Fenced(StoreError):
    """A batch carried a fencing token that is no longer its shard's epoch: another node
    took the shard, so this writer's view is stale and nothing of the batch is applied."""


@dataclass(slots=True)
class IndexEntry:
    """Put `member` into sorted index `index` with `score` and a set of `tags`.

    Tags are short strings such as ``"state=open"``; a query names the tags a member must
    all have. Putting a member again replaces its score and tags.
    """

    index: str
    member: str
    score: float
    tags: frozenset[str]


@dataclass(slots=True)
class TextEntry:
    """Put `member` into text index `index` with `score` and the `words` of its text
    (`text.words`). Putting a member again replaces its score and words."""

    index: str
    member: str
    score: float
    words: tuple[str, ...]


class MadeOnRead(Generic[C]):
    """A `Batch` attribute whose container is kept in the slot of the same name with a
    leading underscore, None until the batch first writes or reads it (then made by
    `make`): stores read `batch.puts` as a plain attribute."""

    __slots__ = ("_make", "_slot")

    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    def __get__(self, batch: Batch, owner: type | None = None) -> C:
        found: C | None = getattr(batch, self._slot)
        if found is None:
            found = self._make()
            setattr(batch, self._slot, found)
        return found


class Batch:
    """An atomic group of writes. Build one, then hand it to `Store.commit`.

    Each kind of write has its container (`puts`, `deletes`, `appends`, ...), made when
    first written or read: most batches use a few of the eleven (an inbound message's
    uses six), and each one made for nothing was an allocation, and a list or set for the
    garbage collector to scan while the batch waits for its commit. Stores read them as
    attributes; a store in this package may read the slots themselves (None: none).
    """

    __slots__ = (
        "_puts", "_deletes", "_appends", "_events", "_timers", "_timer_deletes",
        "_index_puts", "_index_deletes", "_text_puts", "_text_deletes", "_claims", "fence",
    )  # fmt: skip

    def __init__(self) -> None:
        self._puts: dict[str, bytes] | None = None
        self._deletes: set[str] | None = None
        self._appends: list[tuple[str, bytes]] | None = None
        self._events: list[bytes] | None = None
        self._timers: dict[str, tuple[float, bytes]] | None = None
        self._timer_deletes: set[str] | None = None
        self._index_puts: list[IndexEntry] | None = None
        self._index_deletes: list[tuple[str, str]] | None = None
        self._text_puts: dict[tuple[str, str], TextEntry] | None = None  # by (index, member)
        self._text_deletes: set[tuple[str, str]] | None = None
        self._claims: dict[str, bytes] | None = None
        # (shard, epoch) of the writing actor when nodes share the store (see
        # `engine.placement`); a store shared by nodes refuses the batch with `Fenced`
        # unless that epoch is still the shard's. Single-process stores have no shards.
        self.fence: tuple[int, int] | None = None

    # the containers as stores read them: made on first read when the batch has none
    puts = MadeOnRead[dict[str, bytes]](dict)  # keys to set, with their values
    deletes = MadeOnRead[set[str]](set)  # keys to remove
    appends = MadeOnRead[list[tuple[str, bytes]]](list)  # (stream, record), in order
    events = MadeOnRead[list[bytes]](list)  # event payloads, in order
    timers = MadeOnRead[dict[str, tuple[float, bytes]]](dict)  # key → (due, payload)
    timer_deletes = MadeOnRead[set[str]](set)  # durable timers to remove
    index_puts = MadeOnRead[list[IndexEntry]](list)  # sorted index entries, in order
    index_deletes = MadeOnRead[list[tuple[str, str]]](list)  # (index, member) to take out
    text_puts = MadeOnRead[dict[tuple[str, str], TextEntry]](dict)  # by (index, member)
    text_deletes = MadeOnRead[set[tuple[str, str]]](set)  # (index, member) to take out
    claims = MadeOnRead[dict[str, bytes]](dict)  # keys set only if missing (`claim`)

    def put(self, key: str, value: bytes) -> None:
        """Set `key` to `value` (a later delete of the same key in this batch wins)."""
        if self._deletes:
            self._deletes.discard(key)
        if self._puts is None:
            self._puts = {key: value}
        else:
            self._puts[key] = value

    def claim(self, key: str, value: bytes) -> None:
        """Set `key` to `value` if it does not exist; if it does, the whole batch is
        refused with `Claimed` (an idempotency key checked in the write itself, so a
        first delivery costs no read before it)."""
        self.claims[key] = value

    def delete(self, key: str) -> None:
        """Remove `key`."""
        if self._puts:
            self._puts.pop(key, None)
        self.deletes.add(key)

    def append(self, stream: str, record: bytes) -> None:
        """Append `record` to the log `stream`."""
        if self._appends is None:
            self._appends = [(stream, record)]
        else:
            self._appends.append((stream, record))

    def event(self, payload: bytes) -> None:
        """Append `payload` to the event log; it gets the next sequence number."""
        if self._events is None:
            self._events = [payload]
        else:
            self._events.append(payload)

    def set_timer(self, key: str, due: float, payload: bytes) -> None:
        """Store durable timer `key`, due at wall-clock time `due` (epoch seconds)."""
        if self._timer_deletes:
            self._timer_deletes.discard(key)
        self.timers[key] = (due, payload)

    def cancel_timer(self, key: str) -> None:
        """Remove durable timer `key` if it exists."""
        if self._timers:
            self._timers.pop(key, None)
        self.timer_deletes.add(key)

    def index(self, index: str, member: str, score: float, tags: frozenset[str]) -> None:
        """Put `member` in `index` with `score` and `tags` (replacing what it had)."""
        entry = IndexEntry(index, member, score, tags)
        if self._index_puts is None:
            self._index_puts = [entry]
        else:
            self._index_puts.append(entry)

    def unindex(self, index: str, member: str) -> None:
        """Take `member` out of `index`."""
        if self._index_puts:
            self._index_puts = [
                e for e in self._index_puts if (e.index, e.member) != (index, member)
            ]
        self.index_deletes.append((index, member))

    def index_text(self, index: str, member: str, score: float, text: str) -> None:
        """Put `member` in text index `index` with `score`, found by the words of `text`
        (replacing what it had); a text without words takes it out."""
        found = tuple(words(text))
        if found:
            self.text_puts[index, member] = TextEntry(index, member, score, found)
        else:
            self.unindex_text(index, member)

    def unindex_text(self, index: str, member: str) -> None:
        """Take `member` out of text index `index`."""
        if self._text_puts:
            self._text_puts.pop((index, member), None)
        self.text_deletes.add((index, member))

    def __bool__(self) -> bool:
        return bool(
            self._puts
            or self._deletes
            or self._appends
            or self._events
            or self._timers
            or self._timer_deletes
            or self._index_puts
            or self._index_deletes
            or self._text_puts
            or self._text_deletes
            or self._claims
        )


@dataclass(slots=True, frozen=True)
class DueTimer:
    """A durable timer read back from the store."""

    key: str
    due: float
    payload: bytes


class Store(Protocol):
    """Storage for the engine. Implementations: memory, sqlite, redis (one contract suite)."""

    async def commit(self, batch: Batch) -> list[int]:
        """Apply `batch` atomically and durably; return the sequence numbers of its events.

        Deletes are applied before puts of the same batch (puts and deletes of one key
        never both appear, `Batch` keeps them apart). Index and text index deletes are
        applied before their puts. Raises `StoreError` when the batch could not be made
        durable, `Claimed` (applying nothing) when a key it claims exists, checked in
        the same atomic write (so a claimed key is one look-up and one write at once).
        """
        ...

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        ...

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The values of `keys`, in order (None where missing)."""
        ...

    async def log_tail(self, stream: str, n: int) -> list[bytes]:
        """The last `n` records of `stream`, oldest first."""
        ...

    async def log_length(self, stream: str) -> int:
        """How many records `stream` holds."""
        ...

    async def events_since(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Events with sequence number > `seq`, ascending, at most `limit`."""
        ...

    async def last_event_seq(self) -> int:
        """The highest event sequence number so far, 0 if none."""
        ...

    async def first_event_seq(self) -> int:
        """The smallest event sequence number still kept; when none is kept, the next
        one to come (1 in a new store)."""
        ...

    async def drop_events(self, through: int) -> None:
        """Drop the events with sequence number <= `through` (retention)."""
        ...

    async def trim_log(self, stream: str, keep: int) -> None:
        """Drop all but the newest `keep` records of `stream` (retention)."""
        ...

    async def due_timers(self, until: float, limit: int) -> list[DueTimer]:
        """Durable timers due at or before `until`, earliest first, at most `limit`."""
        ...

    async def next_timer_due(self) -> float | None:
        """The due time of the earliest durable timer, or None."""
        ...

    async def index_query(
        self,
        index: str,
        tags: frozenset[str],
        limit: int,
        *,
        descending: bool = True,
        after: tuple[float, str] | None = None,
    ) -> list[tuple[str, float]]:
        """Members of `index` that have all `tags`, as (member, score), ordered by score.

        `descending` orders highest score first; ties are broken by member, in the same
        direction. `after` is the (score, member) of the last row of the previous page:
        only rows strictly beyond it in that order are returned.
        """
        ...

    async def index_count(self, index: str, tags: frozenset[str]) -> int:
        """How many members of `index` have all `tags`."""
        ...

    async def text_query(
        self, index: str, query: str, limit: int, *, after: tuple[float, str] | None = None
    ) -> list[tuple[str, float]]:
        """Members of text index `index` whose words include every word of `query`
        (`text.words`), as (member, score), highest score first, ties by member (also
        descending); `after` as in `index_query`. A query without words finds nothing.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...
