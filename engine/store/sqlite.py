"""`SqliteStore`: the embedded default store, one SQLite file in WAL mode.

Usage::

    store = await SqliteStore("data/tidings.db").open()
    ...
    await store.aclose()

or ``async with SqliteStore(path) as store: ...``.

Writes: `commit` calls from any number of trio tasks are queued (`GroupCommit`); its
flusher applies every batch waiting at that moment on the one write connection in ONE
transaction (one fsync): the statements on the trio thread, the COMMIT in a worker
thread (see `SqliteStore._apply_group`). Should a batch be refused, the group is applied
again with each batch inside its own SAVEPOINT, so that it is rolled back alone and only
its caller gets `StoreError` (group commit). A batch's claims (`Batch.claim`, e.g. an
SMS's idempotency key) are checked in the same transaction, read once for the group: a
batch that claims a key that exists applies nothing and gets `Claimed`, and a message
costs no read of its own before its write. The sorted indexes' tables and statements are in
`sqlite_index`, the text indexes' (FTS5) in `sqlite_text`.

Schema: table ``meta`` holds ``schema_version`` (see `schema`); `open` refuses a newer
one and migrates an older one, one version per transaction (`MIGRATIONS`).

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``. With NORMAL, a WAL commit is
only synced at checkpoint time and a power loss may roll back transactions that were
already acknowledged; an inbound message is acknowledged only once the store says it is
durable, so we pay one fsync per group, which group commit amortises over the group.

Reads: a small pool of read-only connections, each used by one worker thread at a time
through `trio.to_thread.run_sync`; WAL lets them read while the writer writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import trio

from tidings.engine.store import sqlite_index, sqlite_text
from tidings.engine.store.base import (
    Batch,
    Claimed,
    DueTimer,
    IndexEntry,
    OpenedStore,
    StoreError,
    TextEntry,
)
from tidings.engine.store.group_commit import GroupCommit, Outcome
from tidings.engine.store.schema import (
    SCHEMA_VERSION,
    V3_BLOCKED_THREADS,
    check_readable,
    index_text_v3,
    timer_payload_v2,
)
from tidings.engine.store.sqlite_rows import CHUNK, select_in

_T = TypeVar("_T")

# A group larger than this waits for the next transaction: it bounds the latency of the
# first caller in a group, the size of one transaction and how long its statements hold
# the trio thread (about 40 µs a batch).
_MAX_GROUP: Final = 256
_streams_encoder = msgspec.json.Encoder()
_INLINE_KEYS: Final = 64  # reads of up to this many keys run on the trio thread
_READERS: Final = 4

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS timers (
    key TEXT PRIMARY KEY,
    due REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_by_due ON timers (due, key);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value NOT NULL
);
"""

_SCHEMA: Final = _TABLES + sqlite_index.SCHEMA + sqlite_text.SCHEMA


class SqliteStore(OpenedStore):
    """A `Store` in one SQLite file: WAL, one write connection, group commit.

    Open it with ``await SqliteStore(path).open()`` (returns the store) or use it as an
    async context manager. `transactions` and `batches` count committed write
    transactions (one fsync each) and the batches they carried; `schema_version` is the
    store's after `open` (see `schema`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.transactions = 0
        self.batches = 0
        self._commits: GroupCommit[Batch] | None = None
        # One thread at a time writes, and never waits behind the readers' threads.
        self._write_limiter = trio.CapacityLimiter(1)
        self._closed = True
        self._write_conn: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._inline: sqlite3.Connection | None = None  # point reads on the trio thread
        self._read_limiter = trio.CapacityLimiter(_READERS)
        self._last_seq = 0
        self.schema_version = 0  # known once open

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> SqliteStore:
        """Create or open the database file and start the flusher; returns self."""
        if self._commits is not None:
            raise StoreError("store is already open")
        try:
            await trio.to_thread.run_sync(self._open_sync)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self._closed = False
        self._commits = GroupCommit(self._apply_group, name="sqlite", max_group=_MAX_GROUP)
        # A system task, so that the store may be opened and closed in different tasks.
        trio.lowlevel.spawn_system_task(self._commits.run, name=f"sqlite-writer:{self.path.name}")
        return self

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/SAVEPOINT/COMMIT ourselves.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"could not enable WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            check_readable(_stored_version(conn))  # before a newer layout is touched
            conn.executescript(_SCHEMA)
            self.schema_version = _migrate(conn)
            # The writer starts its transactions on the trio thread, where it must not
            # wait for another process's write lock: see `_begin`.
            conn.execute("PRAGMA busy_timeout=0")
            self._last_seq = conn.execute(
                "SELECT MAX(COALESCE((SELECT MAX(seq) FROM events), 0),"
                " COALESCE((SELECT value FROM meta WHERE key='last_event_seq'), 0))"
            ).fetchone()[0]
            inline = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            inline.execute("PRAGMA query_only=1")
            inline.execute("PRAGMA busy_timeout=5000")
            readers = []
            for _ in range(_READERS):
                reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                reader.execute("PRAGMA query_only=1")
                reader.execute("PRAGMA busy_timeout=5000")
                readers.append(reader)
        except BaseException:
            conn.close()
            raise
        self._write_conn = conn
        self._readers = readers
        self._inline = inline

    async def aclose(self) -> None:
        """Finish the queued commits, stop the flusher and close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._commits is not None:
            await self._commits.aclose()
        # Take every reader token so that no read is running while the connections close;
        # reads queued behind us then see the store closed.
        holders = [object() for _ in range(_READERS)]
        for holder in holders:
            await self._read_limiter.acquire_on_behalf_of(holder)
        for conn in self._readers:
            conn.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._write_conn is not None:
            self._write_conn.close()
        self._write_conn = None
        for holder in holders:
            self._read_limiter.release_on_behalf_of(holder)

    def _check(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    # -- writes ----------------------------------------------------------------------

    async def commit(self, batch: Batch) -> list[int]:
        """Apply `batch` atomically and durably (see `Store.commit`).

        If the caller is cancelled while its batch is still queued, the batch is withdrawn
        and nothing is applied; once the flusher has taken it, the call waits for the
        outcome, so a `Cancelled` out of `commit` always means "not applied".
        """
        self._check()
        assert self._commits is not None
        return await self._commits.commit(batch)

    async def _apply_group(self, group: list[Batch]) -> list[Outcome]:
        """Apply `group` in one transaction; one outcome per batch.

        The statements run here, on the trio thread, and only the COMMIT (the fsync, the
        FTS5 flush, a checkpoint) in a worker thread. A group's statements took about
        100 µs of CPU per batch (about 40 since a group is written together, `_apply`),
        but run in a worker thread they took the GIL back after every statement while
        the trio thread served requests: each hand-off could wait
        out the interpreter's switch interval (5 ms), and a group of 26 batches took
        10-30 ms for 2.5 ms of CPU (bench scenario `webhook`). Here they take the GIL
        once.
        """
        conn = self._write_conn
        assert conn is not None
        async with self._write_limiter:
            next_seq = self._last_seq
            outcomes: list[Outcome] | None = None
            try:
                await _begin(conn)
                outcomes = _apply_all(conn, group, next_seq)
                if outcomes is None:  # a batch was refused: again, each in a savepoint
                    if conn.in_transaction:  # (some errors end the transaction themselves)
                        conn.execute("ROLLBACK")
                    await _begin(conn)
                    outcomes = _apply_each(conn, group, next_seq)
                await trio.to_thread.run_sync(conn.execute, "COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the connection reports the original error below
                if not isinstance(exc, sqlite3.Error):
                    raise
                failed = StoreError(f"commit failed: {exc}")
                answers: list[Outcome] = [failed] * len(group)
                for i, outcome in enumerate(outcomes or []):
                    if isinstance(outcome, StoreError):  # refused on its own: says why
                        answers[i] = outcome
                return answers
        applied = [o for o in outcomes if not isinstance(o, StoreError)]
        self._last_seq = next_seq + sum(len(seqs) for seqs in applied)
        self.transactions += 1
        self.batches += len(applied)
        return outcomes

    # -- reads -----------------------------------------------------------------------

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        self._check()
        async with self._read_limiter:
            self._check()
            conn = self._readers.pop()
            try:
                return await trio.to_thread.run_sync(fn, conn, *args)
            except sqlite3.Error as exc:
                raise StoreError(f"read failed: {exc}") from exc
            finally:
                self._readers.append(conn)

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The values of `keys`, in order (None where missing)."""
        if not keys:
            self._check()
            return []
        unique = list(dict.fromkeys(keys))
        if len(unique) <= _INLINE_KEYS and self._inline is not None:
            # A few primary-key lookups take microseconds on WAL's cached pages; a hop to
            # a worker thread and back costs far more, and every inbound message makes
            # several (measured: SQLite pipeline throughput).
            await trio.lowlevel.checkpoint()
            self._check()
            try:
                found = _get_many(self._inline, unique)
            except sqlite3.Error as exc:
                raise StoreError(f"read failed: {exc}") from exc
        else:
            found = await self._read(_get_many, unique)
        return [found.get(k) for k in keys]

    async def log_tail(self, stream: str, n: int) -> list[bytes]:
        """The last `n` records of `stream`, oldest first."""
        if n <= 0:
            self._check()
            return []
        return await self._read(_log_tail, stream, n)

    async def log_length(self, stream: str) -> int:
        """How many records `stream` holds."""
        # a log's records are numbered without holes; `trim_log` drops only its oldest
        return await self._read(
            _scalar,
            "SELECT COALESCE(MAX(seq) - MIN(seq) + 1, 0) FROM logs WHERE stream=?",
            (stream,),
        )

    async def events_since(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Events with sequence number > `seq`, ascending, at most `limit`."""
        if limit <= 0:
            self._check()
            return []
        return await self._read(_events_since, seq, limit)

    async def last_event_seq(self) -> int:
        """The highest event sequence number so far, 0 if none."""
        self._check()
        # Only the writer moves it, after the transaction is durable.
        return self._last_seq

    async def first_event_seq(self) -> int:
        """The smallest event sequence number still kept (the next one when none is)."""
        first: int | None = await self._read(_scalar, "SELECT MIN(seq) FROM events", ())
        return first if first is not None else self._last_seq + 1

    async def drop_events(self, through: int) -> None:
        """Drop the events with sequence number <= `through`."""
        # the number reached is recorded too: with every event dropped, MAX(seq) is gone
        await self._write(
            ("DELETE FROM events WHERE seq <= ?", (through,)),
            (
                "INSERT INTO meta (key, value) VALUES ('last_event_seq', ?)"
                " ON CONFLICT (key) DO UPDATE SET value=MAX(value, excluded.value)",
                (self._last_seq,),
            ),
        )

    async def trim_log(self, stream: str, keep: int) -> None:
        """Drop all but the newest `keep` records of `stream`."""
        await self._write(
            (
                "DELETE FROM logs WHERE stream=? AND seq <="
                " (SELECT MAX(seq) FROM logs WHERE stream=?) - ?",
                (stream, stream, max(keep, 0)),
            )
        )

    async def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """`statements` in a transaction of their own, on the write connection."""
        self._check()
        await trio.to_thread.run_sync(self._write_sync, statements, limiter=self._write_limiter)

    def _write_sync(self, statements: tuple[tuple[str, tuple[Any, ...]], ...]) -> None:
        conn = self._write_conn
        if conn is None:
            raise StoreError("store is closed")
        try:
            _begin_waiting(conn)
            try:
                for sql, params in statements:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"write failed: {exc}") from exc

    async def due_timers(self, until: float, limit: int) -> list[DueTimer]:
        """Durable timers due at or before `until`, earliest first, at most `limit`."""
        if limit <= 0:
            self._check()
            return []
        return await self._read(_due_timers, until, limit)

    async def next_timer_due(self) -> float | None:
        """The due time of the earliest durable timer, or None."""
        due: float | None = await self._read(_scalar, "SELECT MIN(due) FROM timers", ())
        return due

    async def index_query(
        self,
        index: str,
        tags: frozenset[str],
        limit: int,
        *,
        descending: bool = True,
        after: tuple[float, str] | None = None,
    ) -> list[tuple[str, float]]:
        """Members of `index` with all `tags`, ordered by score (see `Store.index_query`)."""
        if limit <= 0:
            self._check()
            return []
        return await self._read(sqlite_index.query, index, tags, limit, descending, after)

    async def index_count(self, index: str, tags: frozenset[str]) -> int:
        """How many members of `index` have all `tags`."""
        return await self._read(sqlite_index.count, index, tags)

    async def text_query(
        self, index: str, query: str, limit: int, *, after: tuple[float, str] | None = None
    ) -> list[tuple[str, float]]:
        """Members of text index `index` with every word of `query` (see `Store.text_query`)."""
        if limit <= 0:
            self._check()
            return []
        return await self._read(sqlite_text.query, index, query, limit, after)


# -- schema versions (run in the opening thread) --------------------------------------


def _stored_version(conn: sqlite3.Connection) -> int:
    """The recorded schema version; 1 for a store from before versions were recorded."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 1


def _timers_v2(conn: sqlite3.Connection) -> None:
    """1 → 2: durable timers name their message by tag (`schema.timer_payload_v2`)."""
    rows = conn.execute("SELECT key, payload FROM timers").fetchall()
    changed = [(new, key) for key, payload in rows if (new := timer_payload_v2(payload))]
    conn.executemany("UPDATE timers SET payload=? WHERE key=?", changed)


def _text_v3(conn: sqlite3.Connection) -> None:
    """2 → 3: index the stored messages and profiles (`schema.index_text_v3`)."""
    blocked = frozenset(
        record.decode()
        for (record,) in conn.execute(
            "SELECT record FROM logs WHERE stream >= ? AND stream < ?",
            (V3_BLOCKED_THREADS, V3_BLOCKED_THREADS[:-1] + ";"),
        )
    )
    for low, high in (("msg:", "msg;"), ("profile:", "profile;")):
        rows = conn.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ?", (low, high))
        while chunk := rows.fetchmany(CHUNK):
            batch = Batch()
            for key, value in chunk:
                index_text_v3(batch, key, value, blocked)
            _apply(conn, [batch], 0)


MIGRATIONS: Final = (_timers_v2, _text_v3)
"""``MIGRATIONS[n - 1]`` takes a store of version n to n + 1."""


def _migrate(conn: sqlite3.Connection) -> int:
    """Bring the store to `SCHEMA_VERSION`, one transaction per step; returns it."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # read again inside the write lock: another process may have migrated it
            version = _stored_version(conn)
            check_readable(version)
            if version < SCHEMA_VERSION:
                MIGRATIONS[version - 1](conn)
                version += 1
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (version,),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if version == SCHEMA_VERSION:
            return version


# -- the writer's statements (run on the trio thread, see `SqliteStore._apply_group`) --

_BUSY_TIMEOUT_MS: Final = 5000


async def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE on the write connection (whose busy timeout is 0): at once when no
    other process holds SQLite's write lock, as in a server that is the store's only
    writer; else in a worker thread that waits for the lock as long as the readers do."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise
        await trio.to_thread.run_sync(_begin_waiting, conn)


def _begin_waiting(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting up to `_BUSY_TIMEOUT_MS` for the write lock (blocks)."""
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute("PRAGMA busy_timeout=0")


def _apply_all(conn: sqlite3.Connection, group: list[Batch], last_seq: int) -> list[Outcome] | None:
    """Apply every batch of `group` in the open transaction, or None when one is refused
    (the transaction must then be rolled back). No savepoint per batch: FTS5 writes its
    pending words to disk at every savepoint, and a batch is seldom refused."""
    try:
        return _apply(conn, group, last_seq)
    except sqlite3.Error:
        return None


def _apply_each(conn: sqlite3.Connection, group: list[Batch], last_seq: int) -> list[Outcome]:
    """Apply each batch of `group` in a savepoint of its own, so that a batch that fails
    is rolled back alone and only its caller gets `StoreError`."""
    outcomes: list[Outcome] = []
    for batch in group:
        conn.execute("SAVEPOINT batch")
        try:
            (outcome,) = _apply(conn, [batch], last_seq)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            outcomes.append(StoreError(f"batch refused: {exc}"))
            continue
        conn.execute("RELEASE batch")
        outcomes.append(outcome)
        if not isinstance(outcome, StoreError):
            last_seq += len(outcome)
    return outcomes


def _apply(conn: sqlite3.Connection, batches: list[Batch], last_seq: int) -> list[Outcome]:
    """Apply `batches`, in order, inside the current transaction or savepoint; return
    each one's event sequence numbers, or `Claimed` for a batch that claims a key that
    exists (stored, or written by a batch before it) and so applies nothing.

    What they change together is applied at once, one `executemany` per statement: a
    key, timer or index member that several of them write ends as the last one left it
    (within a batch deletes come before puts), so only that is written, and the rows
    the indexes must read first are read once for all of them. Per inbound SMS this
    takes about 13 row writes, one statement call each for the whole group, where a
    statement per batch and section (and a read before each log append and index
    entry) took about 18 calls (bench scenario `pipeline`, SQLite).
    """
    kv: dict[str, bytes | None] = {}
    appends: list[tuple[str, bytes]] = []
    events: list[tuple[int, bytes]] = []
    timers: dict[str, tuple[float, bytes] | None] = {}
    indexed: dict[tuple[str, str], IndexEntry | None] = {}
    texts: dict[tuple[str, str], TextEntry | None] = {}
    outcomes: list[Outcome] = []
    stored = _claimed(conn, batches)
    for batch in batches:
        refused = _refused(batch, kv, stored)
        if refused is not None:
            outcomes.append(refused)
            continue
        kv.update(batch.claims)
        kv.update(dict.fromkeys(batch.deletes))
        kv.update(batch.puts)
        appends += batch.appends
        seqs = list(range(last_seq + 1, last_seq + 1 + len(batch.events)))
        events += zip(seqs, batch.events, strict=True)
        last_seq += len(seqs)
        outcomes.append(seqs)
        timers.update(dict.fromkeys(batch.timer_deletes))
        timers.update(batch.timers)
        indexed.update(dict.fromkeys(batch.index_deletes))
        indexed.update(((e.index, e.member), e) for e in batch.index_puts)
        texts.update(dict.fromkeys(batch.text_deletes))
        texts.update(batch.text_puts)
    _write_kv(conn, kv)
    if appends:
        _append_logs(conn, appends)
    if events:
        conn.executemany("INSERT INTO events (seq, payload) VALUES (?, ?)", events)
    _write_timers(conn, timers)
    if indexed:
        sqlite_index.write(conn, indexed)
    if texts:
        sqlite_text.write(conn, texts)
    return outcomes


def _claimed(conn: sqlite3.Connection, batches: list[Batch]) -> dict[str, bytes]:
    """The stored values of the keys that `batches` claim (one read for all)."""
    keys = [key for batch in batches for key in batch.claims]
    return _get_many(conn, keys) if keys else {}


def _refused(batch: Batch, kv: dict[str, bytes | None], stored: dict[str, bytes]) -> Claimed | None:
    """`Claimed` for the first key `batch` claims that exists: as the batches before it
    left it in `kv` (None: deleted), else as `stored`; None when it may be applied."""
    for key in batch.claims:
        value = kv[key] if key in kv else stored.get(key)
        if value is not None:
            return Claimed(key, value)
    return None


def _write_kv(conn: sqlite3.Connection, kv: dict[str, bytes | None]) -> None:
    """Set each key to its value, or delete it where the value is None."""
    deletes = [(k,) for k, v in kv.items() if v is None]
    if deletes:
        conn.executemany("DELETE FROM kv WHERE key=?", deletes)
    if len(deletes) < len(kv):
        conn.executemany(
            "INSERT INTO kv (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            [(k, v) for k, v in kv.items() if v is not None],
        )


def _append_logs(conn: sqlite3.Connection, appends: list[tuple[str, bytes]]) -> None:
    """Append each (stream, record), numbered on from each stream's last record (read
    for all streams in one statement; a seek per stream: ``MAX(seq) ... GROUP BY``
    walked every record of each)."""
    streams = _streams_encoder.encode(list(dict.fromkeys(stream for stream, _ in appends)))
    last: dict[str, int] = {
        stream: seq or 0
        for stream, seq in conn.execute(
            "SELECT value, (SELECT seq FROM logs WHERE stream=value ORDER BY seq DESC LIMIT 1)"
            " FROM json_each(?)",
            (streams,),
        )
    }
    rows = []
    for stream, record in appends:
        seq = last[stream] = last[stream] + 1
        rows.append((stream, seq, record))
    conn.executemany("INSERT INTO logs (stream, seq, record) VALUES (?, ?, ?)", rows)


def _write_timers(conn: sqlite3.Connection, timers: dict[str, tuple[float, bytes] | None]) -> None:
    """Set each durable timer to its (due, payload), or delete it where that is None."""
    deletes = [(k,) for k, v in timers.items() if v is None]
    if deletes:
        conn.executemany("DELETE FROM timers WHERE key=?", deletes)
    if len(deletes) < len(timers):
        conn.executemany(
            "INSERT INTO timers (key, due, payload) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET due=excluded.due, payload=excluded.payload",
            [(k, v[0], v[1]) for k, v in timers.items() if v is not None],
        )


# -- the readers' statements (run in worker threads) ---------------------------------


def _scalar(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def _get_many(conn: sqlite3.Connection, keys: list[str]) -> dict[str, bytes]:
    return dict(select_in(conn, "SELECT key, value FROM kv WHERE key IN ({marks})", (), keys))


def _log_tail(conn: sqlite3.Connection, stream: str, n: int) -> list[bytes]:
    rows = conn.execute(
        "SELECT record FROM logs WHERE stream=? ORDER BY seq DESC LIMIT ?", (stream, n)
    ).fetchall()
    return [r[0] for r in reversed(rows)]


def _events_since(conn: sqlite3.Connection, seq: int, limit: int) -> list[tuple[int, bytes]]:
    return conn.execute(
        "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
    ).fetchall()


def _due_timers(conn: sqlite3.Connection, until: float, limit: int) -> list[DueTimer]:
    rows = conn.execute(
        "SELECT key, due, payload FROM timers WHERE due <= ? ORDER BY due, key LIMIT ?",
        (until, limit),
    )
    return [DueTimer(key, due, payload) for key, due, payload in rows]
