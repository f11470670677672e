"""`SqliteStore`: the embedded default store, one SQLite file in WAL mode.

Usage::

    store = await SqliteStore("data/tidings.db").open()
    ...
    await store.aclose()

or ``async with SqliteStore(path) as store: ...``.

Writes: one writer thread owns the only write connection. `commit` calls from any number
of trio tasks are queued; the writer takes every batch waiting at that moment and applies
them in ONE transaction (one fsync), each batch inside its own SAVEPOINT so that a batch
that fails is rolled back alone and only its caller gets `StoreError` (group commit).

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``. With NORMAL, a WAL commit is
only synced at checkpoint time and a power loss may roll back transactions that were
already acknowledged; an inbound message is acknowledged only once the store says it is
durable, so we pay one fsync per group, which group commit amortises over the group.

Reads: a small pool of read-only connections, each used by one worker thread at a time
through `trio.to_thread.run_sync`; WAL lets them read while the writer writes.
"""

from __future__ import annotations

import collections
import itertools
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import trio
from tidings.engine.store.base import Batch, DueTimer, OpenedStore, StoreError

_T = TypeVar("_T")

# A group larger than this waits for the next transaction: it bounds the latency of the
# first caller in a group and the size of one transaction.
_MAX_GROUP: Final = 2048
# SQLite's bound-parameter limit is 32766 since 3.32; stay far below it.
_CHUNK: Final = 500
_INLINE_KEYS: Final = 64  # reads of up to this many keys run on the trio thread
_READERS: Final = 4

_SCHEMA: Final = """
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
CREATE TABLE IF NOT EXISTS index_members (
    idx TEXT NOT NULL,
    member TEXT NOT NULL,
    score REAL NOT NULL,
    tags BLOB NOT NULL,
    PRIMARY KEY (idx, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS index_members_by_score ON index_members (idx, score, member);
CREATE TABLE IF NOT EXISTS index_tags (
    idx TEXT NOT NULL,
    tag TEXT NOT NULL,
    score REAL NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (idx, tag, score, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_tag_counts (
    idx TEXT NOT NULL,
    tag TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (idx, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_pair_counts (
    idx TEXT NOT NULL,
    tag_a TEXT NOT NULL,
    tag_b TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (idx, tag_a, tag_b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_sizes (
    idx TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
"""

_QUEUED: Final = 0
_TAKEN: Final = 1
_WITHDRAWN: Final = 2

_tags_encoder = msgspec.json.Encoder()
_tags_decoder = msgspec.json.Decoder(list[str])


class _Commit:
    """One `commit` call waiting for the writer."""

    __slots__ = ("batch", "done", "error", "seqs", "state")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.state = _QUEUED
        self.done = trio.Event()
        self.seqs: list[int] = []
        self.error: StoreError | None = None


class SqliteStore(OpenedStore):
    """A `Store` in one SQLite file: WAL, one writer thread, group commit.

    Open it with ``await SqliteStore(path).open()`` (returns the store) or use it as an
    async context manager. `transactions` and `batches` count committed write
    transactions (one fsync each) and the batches they carried.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.transactions = 0
        self.batches = 0
        self._lock = threading.Condition(threading.Lock())
        self._queue: collections.deque[_Commit] = collections.deque()
        self._closing = False
        self._closed = True
        self._writer: threading.Thread | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._inline: sqlite3.Connection | None = None  # point reads on the trio thread
        self._read_limiter = trio.CapacityLimiter(_READERS)
        self._token: trio.lowlevel.TrioToken | None = None
        self._last_seq = 0

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> SqliteStore:
        """Create or open the database file and start the writer thread; returns self."""
        if self._writer is not None:
            raise StoreError("store is already open")
        self._token = trio.lowlevel.current_trio_token()
        try:
            await trio.to_thread.run_sync(self._open_sync)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self._closed = False
        self._closing = False
        self._writer = threading.Thread(
            target=self._writer_loop, name=f"sqlite-writer:{self.path.name}", daemon=True
        )
        self._writer.start()
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
            conn.executescript(_SCHEMA)
            self._last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
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
        """Finish the queued commits, stop the writer thread and close the connections."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._closing = True
            self._lock.notify()
        writer = self._writer
        if writer is not None:
            await trio.to_thread.run_sync(writer.join)
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
        and nothing is applied; once the writer has taken it, the call waits for the
        outcome, so a `Cancelled` out of `commit` always means "not applied".
        """
        self._check()
        request = _Commit(batch)
        with self._lock:
            if self._closing:
                raise StoreError("store is closed")
            self._queue.append(request)
            self._lock.notify()
        try:
            await request.done.wait()
        except trio.Cancelled:
            with self._lock:
                if request.state == _QUEUED:
                    request.state = _WITHDRAWN
                    raise
            with trio.CancelScope(shield=True):
                await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.seqs

    def _writer_loop(self) -> None:
        """The writer thread: take all waiting batches, commit them together, wake callers."""
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait()
                if not self._queue:
                    return
                group: list[_Commit] = []
                while self._queue and len(group) < _MAX_GROUP:
                    request = self._queue.popleft()
                    if request.state == _QUEUED:
                        request.state = _TAKEN
                        group.append(request)
            if not group:
                continue
            try:
                self._commit_group(group)
            except BaseException as exc:  # the loop must outlive any bug to wake the callers
                for request in group:
                    request.error = StoreError(f"write failed: {exc!r}")
            self._wake(group)

    def _wake(self, group: list[_Commit]) -> None:
        def wake() -> None:
            for request in group:
                request.done.set()

        assert self._token is not None
        try:
            self._token.run_sync_soon(wake)
        except trio.RunFinishedError:
            pass  # nobody is left to wake

    def _commit_group(self, group: list[_Commit]) -> None:
        conn = self._write_conn
        assert conn is not None
        next_seq = self._last_seq
        applied = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in group:
                conn.execute("SAVEPOINT batch")
                try:
                    seqs = _apply(conn, request.batch, next_seq)
                except sqlite3.Error as exc:
                    # Roll back this batch alone; the others in the group go on.
                    conn.execute("ROLLBACK TO batch")
                    conn.execute("RELEASE batch")
                    request.error = StoreError(f"batch refused: {exc}")
                    continue
                conn.execute("RELEASE batch")
                request.seqs = seqs
                next_seq += len(seqs)
                applied += 1
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the connection reports the original error below
            for request in group:
                request.seqs = []
                if request.error is None:
                    request.error = StoreError(f"commit failed: {exc}")
            if not isinstance(exc, sqlite3.Error):
                raise
            return
        self._last_seq = next_seq
        self.transactions += 1
        self.batches += applied

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
        return await self._read(
            _scalar, "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE stream=?", (stream,)
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
        return await self._read(_index_query, index, tags, limit, descending, after)

    async def index_count(self, index: str, tags: frozenset[str]) -> int:
        """How many members of `index` have all `tags`."""
        return await self._read(_index_count, index, tags)


# -- the writer's statements (run in the writer thread) ------------------------------


def _apply(conn: sqlite3.Connection, batch: Batch, last_seq: int) -> list[int]:
    """Apply `batch` inside the current savepoint; return its event sequence numbers."""
    if batch.deletes:
        conn.executemany("DELETE FROM kv WHERE key=?", [(k,) for k in batch.deletes])
    if batch.puts:
        conn.executemany(
            "INSERT INTO kv (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            batch.puts.items(),
        )
    if batch.appends:
        next_log_seq: dict[str, int] = {}
        rows = []
        for stream, record in batch.appends:
            seq = next_log_seq.get(stream)
            if seq is None:
                seq = _scalar(
                    conn, "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE stream=?", (stream,)
                )
            seq += 1
            next_log_seq[stream] = seq
            rows.append((stream, seq, record))
        conn.executemany("INSERT INTO logs (stream, seq, record) VALUES (?, ?, ?)", rows)
    seqs = list(range(last_seq + 1, last_seq + 1 + len(batch.events)))
    if batch.events:
        conn.executemany(
            "INSERT INTO events (seq, payload) VALUES (?, ?)", zip(seqs, batch.events, strict=True)
        )
    if batch.timer_deletes:
        conn.executemany("DELETE FROM timers WHERE key=?", [(k,) for k in batch.timer_deletes])
    if batch.timers:
        conn.executemany(
            "INSERT INTO timers (key, due, payload) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET due=excluded.due, payload=excluded.payload",
            [(k, due, payload) for k, (due, payload) in batch.timers.items()],
        )
    for index, member in batch.index_deletes:
        _unindex(conn, index, member)
    for entry in batch.index_puts:
        tags = sorted(entry.tags)
        if _rescore(conn, entry.index, entry.member, entry.score, tags):
            continue
        _unindex(conn, entry.index, entry.member)
        conn.execute(
            "INSERT INTO index_members (idx, member, score, tags) VALUES (?, ?, ?, ?)",
            (entry.index, entry.member, entry.score, _tags_encoder.encode(tags)),
        )
        conn.executemany(
            "INSERT INTO index_tags (idx, tag, score, member) VALUES (?, ?, ?, ?)",
            [(entry.index, tag, entry.score, entry.member) for tag in tags],
        )
        _count(conn, entry.index, tags, +1)
    return seqs


def _rescore(
    conn: sqlite3.Connection, index: str, member: str, score: float, tags: list[str]
) -> bool:
    """Move a member that keeps its tags to a new score; False when its tags change.

    The common case (a ticket's last activity moves, its state does not) then costs two
    updates instead of a delete and re-insert of every tag row and count.
    """
    row = conn.execute(
        "SELECT score, tags FROM index_members WHERE idx=? AND member=?", (index, member)
    ).fetchone()
    if row is None or sorted(_tags_decoder.decode(row[1])) != tags:
        return False
    old_score = row[0]
    if old_score != score:
        conn.execute(
            "UPDATE index_members SET score=? WHERE idx=? AND member=?", (score, index, member)
        )
        conn.executemany(
            "UPDATE index_tags SET score=? WHERE idx=? AND tag=? AND score=? AND member=?",
            [(score, index, tag, old_score, member) for tag in tags],
        )
    return True


def _unindex(conn: sqlite3.Connection, index: str, member: str) -> None:
    row = conn.execute(
        "SELECT score, tags FROM index_members WHERE idx=? AND member=?", (index, member)
    ).fetchone()
    if row is None:
        return
    score, encoded = row
    tags = sorted(_tags_decoder.decode(encoded))
    conn.execute("DELETE FROM index_members WHERE idx=? AND member=?", (index, member))
    conn.executemany(
        "DELETE FROM index_tags WHERE idx=? AND tag=? AND score=? AND member=?",
        [(index, tag, score, member) for tag in tags],
    )
    _count(conn, index, tags, -1)


def _count(conn: sqlite3.Connection, index: str, tags: list[str], delta: int) -> None:
    """Keep the member counts per index, per tag and per pair of tags (`tags` sorted).

    They pick the rarest tag to walk in a query and answer `index_count` for zero, one or
    two tags without a scan (the inbox's tab counters are such counts); the price is
    k(k-1)/2 small upserts for a member with k tags.
    """
    conn.execute(
        "INSERT INTO index_sizes (idx, n) VALUES (?, ?)"
        " ON CONFLICT (idx) DO UPDATE SET n = n + excluded.n",
        (index, delta),
    )
    conn.executemany(
        "INSERT INTO index_tag_counts (idx, tag, n) VALUES (?, ?, ?)"
        " ON CONFLICT (idx, tag) DO UPDATE SET n = n + excluded.n",
        [(index, tag, delta) for tag in tags],
    )
    if len(tags) > 1:
        conn.executemany(
            "INSERT INTO index_pair_counts (idx, tag_a, tag_b, n) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (idx, tag_a, tag_b) DO UPDATE SET n = n + excluded.n",
            [(index, a, b, delta) for a, b in itertools.combinations(tags, 2)],
        )


# -- the readers' statements (run in worker threads) ---------------------------------


def _scalar(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def _get_many(conn: sqlite3.Connection, keys: list[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(conn.execute(f"SELECT key, value FROM kv WHERE key IN ({marks})", chunk))
    return found


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


def _tag_counts(
    conn: sqlite3.Connection, index: str, tags: frozenset[str]
) -> list[tuple[str, int]]:
    """(tag, member count) for `tags`, smallest first; a tag nobody has counts 0."""
    marks = ",".join("?" * len(tags))
    have = dict(
        conn.execute(
            f"SELECT tag, n FROM index_tag_counts WHERE idx=? AND tag IN ({marks})",
            (index, *tags),
        )
    )
    return sorted(((t, have.get(t, 0)) for t in tags), key=lambda tn: (tn[1], tn[0]))


def _index_query(
    conn: sqlite3.Connection,
    index: str,
    tags: frozenset[str],
    limit: int,
    descending: bool,
    after: tuple[float, str] | None,
) -> list[tuple[str, float]]:
    cmp, order = ("<", "DESC") if descending else (">", "ASC")
    params: list[Any] = [index]
    if not tags:
        sql = "SELECT member, score FROM index_members t WHERE t.idx=?"
    else:
        counts = _tag_counts(conn, index, tags)
        if counts[0][1] == 0:
            return []
        # Walk the rarest tag's rows in score order and keep those that have the others.
        sql = "SELECT member, score FROM index_tags t WHERE t.idx=? AND t.tag=?"
        params.append(counts[0][0])
        for tag, _ in counts[1:]:
            sql += (
                " AND EXISTS (SELECT 1 FROM index_tags o WHERE o.idx=t.idx AND o.tag=?"
                " AND o.score=t.score AND o.member=t.member)"
            )
            params.append(tag)
    if after is not None:
        # The redundant `score <=/>= ?` gives SQLite an index range to seek to.
        score, member = after
        sql += f" AND t.score {cmp}= ? AND (t.score {cmp} ? OR t.member {cmp} ?)"
        params += [score, score, member]
    sql += f" ORDER BY t.score {order}, t.member {order} LIMIT ?"
    params.append(limit)
    return conn.execute(sql, params).fetchall()


def _index_count(conn: sqlite3.Connection, index: str, tags: frozenset[str]) -> int:
    if not tags:
        n = conn.execute("SELECT n FROM index_sizes WHERE idx=?", (index,)).fetchone()
        return int(n[0]) if n else 0
    counts = _tag_counts(conn, index, tags)
    if len(counts) == 1 or counts[0][1] == 0:
        return counts[0][1]
    if len(counts) == 2:
        a, b = sorted(tags)
        n = conn.execute(
            "SELECT n FROM index_pair_counts WHERE idx=? AND tag_a=? AND tag_b=?", (index, a, b)
        ).fetchone()
        return int(n[0]) if n else 0
    sql = "SELECT COUNT(*) FROM index_tags t WHERE t.idx=? AND t.tag=?"
    params: list[Any] = [index, counts[0][0]]
    for tag, _ in counts[1:]:
        sql += (
            " AND EXISTS (SELECT 1 FROM index_tags o WHERE o.idx=t.idx AND o.tag=?"
            " AND o.score=t.score AND o.member=t.member)"
        )
        params.append(tag)
    return int(conn.execute(sql, params).fetchone()[0])
