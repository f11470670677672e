"""`RedisStore`: the store on a Redis server (7.0 or later), through coredis.

Usage::

    store = await RedisStore("redis://127.0.0.1:6379/0", prefix="tidings:").open()
    ...
    await store.aclose()

or ``async with RedisStore(url) as store: ...``.

coredis runs on trio through anyio, but a coredis client must be entered as an async
context manager that owns a task group for its connections. `RedisStore` enters it in a
trio system task of its own, so that the store can be opened in one place and closed in
another (the `Store` protocol's `open`/`aclose` shape) without tying the connections'
task group to the caller's cancel scopes.

Writes: the flusher of `GroupCommit` takes all batches waiting at that moment and sends
them in ONE call of the commit script (group commit), which applies them in call order
and answers each alone: a script runs atomically, and each batch's events get gap-free
sequence numbers from an INCRBY in it. The batches travel as one msgpack argument, each
encoded (msgspec) by its own caller: a command per batch, or an argument per key and
value, cost coredis several µs of Python each, more than the rest of the commit. A
batch's fencing token and claims (`Batch.claim`, e.g. an SMS's idempotency key) are
checked before anything of it is written, so a refused batch is refused whole and alone,
and a message costs no read before its write. The script is a Redis 7 "shebang" script,
so an out-of-memory server refuses it before it writes anything; inputs that Redis would
reject mid-script (NaN scores, NaN due times) are refused in Python before sending.

Scripts: the Lua sources are the package's ``lua/*.lua`` files (commit, query, count,
due, migrate), loaded once at import.

Schema: `open` refuses a store of a newer schema version and migrates an older one, one
version per call of the ``migrate`` script (which re-checks the version and each value
it rewrites, so concurrent openers cannot migrate twice).

Durability is the server's: acknowledged means durable only with ``appendonly yes`` and
``appendfsync always`` (the test server runs that way).

Keys: every key starts with ``{<prefix>}``; the braces make the prefix the Redis Cluster
hash tag, so ALL keys of one store live in one hash slot. A batch may touch any kv key,
log, timer and index at once and must be atomic, which a Lua script can only be within
one slot: the price is that one store does not spread over cluster shards.

A Redis Cluster is named ``redis+cluster://host:port`` (one of its masters) and reached
through coredis' ``RedisCluster`` client: the scripts, commits, fencing, leases, shard mail
and event reads all go to the one slot's master (``now_id`` reads ``TIME`` in a script keyed
on the store, since a bare ``TIME`` names no slot; ``scan_iter`` visits every master). The
tests run the store contract and two placed nodes on three local masters. Spreading one
store over the masters would need per-actor hash tags, and then a commit that writes an
actor's keys, the event log and shared indexes could no longer be one script: the log and
the indexes would have to be split per slot (events merged by sequence on read) or written
after the actor's commit by an outbox of their own.

- ``{p}kv:<key>``               string
- ``{p}log:<stream>``           list (RPUSH)
- ``{p}events:seq``             counter; ``{p}events`` stream with ids ``0-<seq>``
- ``{p}meta:schema_version``   the schema version (see `schema`; absent: version 1)
- ``{p}timers``                 sorted set key→due; ``{p}timers:payload`` hash key→payload
- ``{p}ix:<len>:<index>:all``   sorted set of every member (score)
- ``{p}ix:<len>:<index>:t:<tag>``  sorted set of the members with that tag
- ``{p}ix:<len>:<index>:tags``  hash member→JSON list of its tags (so a put replaces them)
- ``{p}ix:<len>:<index>:pairs`` hash pair of tags→member count (two-tag `index_count`)
- ``{p}tx:<len>:<index>:words`` hash member→JSON list of its words (so a put replaces them)
- ``{p}tx:<len>:<index>:w:<word>``  sorted set of the members with that word (score)
- ``{p}shard:<n>:lease|epoch|mail``, ``{p}members``, ``{p}node:<id>:replies``: nodes
  sharing the store (`redis_shards`); a batch's fencing token is checked against
  ``{p}shard:<n>:epoch`` inside the commit script.

The index name is length-prefixed so that no (index, tag) pair can spell another's key.

Text indexes are an inverted index kept by the commit script, in the same atomic unit as
the rest of the batch, so after a restart (or a crash: the AOF replays whole scripts) the
words always match the records they were written with. RediSearch is not used: a plain
``redis-server`` does not have it. A query walks the member set of its rarest word in
score order and keeps the members the other words' sets have (the ``query`` script, as
for tags); a word is letters and digits (`text.words`), so it cannot reach another key.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any, Final

import coredis
import coredis.exceptions
import msgspec
import trio
from coredis.tokens import PureToken

from tidings.engine.store.base import (
    Batch,
    Claimed,
    DueTimer,
    Fenced,
    OpenedStore,
    StoreError,
)
from tidings.engine.store.group_commit import GroupCommit, Outcome
from tidings.engine.store.schema import (
    SCHEMA_VERSION,
    V3_BLOCKED_THREADS,
    check_readable,
    index_text_v3,
    timer_payload_v2,
)
from tidings.engine.store.text import words

_LUA: Final = resources.files(__package__).joinpath("lua")
_SCRIPTS: Final = {
    name: _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    for name in ("commit", "query", "count", "due", "migrate")
}
# A group larger than this waits for the next call of the commit script: the server runs
# nothing else while a script runs (about 80 µs a batch: 20 ms for a full group), and
# the nodes' leases must be renewed meanwhile.
_MAX_GROUP: Final = 256

_tags_encoder = msgspec.json.Encoder()
_batch_encoder = msgspec.msgpack.Encoder()


class _Encoded:
    """One batch as the commit script reads it, and the keys it claims (for `Claimed`)."""

    __slots__ = ("batch", "claims")

    def __init__(self, batch: msgspec.Raw, claims: list[str]) -> None:
        self.batch = batch
        self.claims = claims


def _lua_string(value: bytes) -> msgspec.Raw:
    """`value` as a msgpack string: the script's msgpack decoder (Redis' cmsgpack) reads
    no bin type, which msgspec gives bytes, but a Lua string holds any bytes."""
    n = len(value)
    if n < 32:
        head = bytes((0xA0 | n,))
    elif n < 0x100:
        head = b"\xd9" + bytes((n,))
    elif n < 0x10000:
        head = b"\xda" + n.to_bytes(2, "big")
    else:
        head = b"\xdb" + n.to_bytes(4, "big")
    return msgspec.Raw(head + value)


def _outcome(encoded: _Encoded, answer: list[Any]) -> Outcome:
    """What the commit script's `answer` for one batch means (see ``commit.lua``)."""
    first = int(answer[0])
    if first >= 0:
        return list(range(first, first + int(answer[1])))
    if first == -1:  # a claimed key exists: nothing was written
        return Claimed(encoded.claims[int(answer[1])], _bytes(answer[2]))
    refused = Fenced if first == -2 else StoreError
    return refused(f"batch refused: {_text(answer[1])}")


def _num(value: float) -> str:
    """`value` as Redis parses it back to the same double."""
    return repr(float(value))


Client = coredis.Redis[bytes] | coredis.RedisCluster[bytes]
"""A client of one Redis server, or of a Redis Cluster (``redis+cluster://``)."""


def _connect(url: str) -> Client:
    """The client for `url`: ``redis+cluster://host:port`` (or ``rediss+cluster://``) is a
    Redis Cluster known by one of its masters; any other is one server."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower().endswith("+cluster"):
        plain = scheme[: -len("+cluster")] + sep + rest
        return coredis.RedisCluster.from_url(plain, decode_responses=False)
    return coredis.Redis.from_url(url, decode_responses=False)


class RedisStore(OpenedStore):
    """A `Store` on a Redis 7+ server: one Lua script call per batch, pipelined.

    Open it with ``await RedisStore(url, prefix="tidings:").open()`` (returns the store)
    or use it as an async context manager. See the module docstring for the key layout;
    `schema_version` is the store's after `open`.
    """

    def __init__(self, url: str, *, prefix: str = "tidings:") -> None:
        self.url = url
        self.prefix = prefix
        self._base = "{" + prefix + "}"
        self._events_seq = self._base + "events:seq"
        self._events = self._base + "events"
        self._timers = self._base + "timers"
        self._timer_payloads = self._base + "timers:payload"
        self._client: Client | None = None
        self._closed = True
        self._failure: BaseException | None = None
        self._stopped = trio.Event()
        self._commits = GroupCommit(self._send_group, name="redis", max_group=_MAX_GROUP)
        self._shas: dict[str, str] = {}
        self._schema_key = self._base + "meta:schema_version"
        self.schema_version = 0  # known once open

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> RedisStore:
        """Connect, check the server answers and load the scripts; returns self."""
        if self._client is not None:
            raise StoreError("store is already open")
        try:
            self._client = _connect(self.url)
        except (ValueError, coredis.exceptions.RedisError) as exc:
            raise StoreError(f"bad redis URL {self.url!r}: {exc}") from exc
        ready = trio.Event()
        trio.lowlevel.spawn_system_task(self._host, ready, name=f"redis-store:{self.url}")
        await ready.wait()
        if self._failure is not None:
            raise StoreError(f"cannot connect to {self.url}: {self._failure!r}")
        self._closed = False
        try:
            await self._client.ping()
            await self._load_scripts()
            self.schema_version = await self._migrate()
        except StoreError:
            await self.aclose()
            raise
        except Exception as exc:
            await self.aclose()
            raise StoreError(f"cannot open {self.url}: {exc!r}") from exc
        return self

    async def _host(self, ready: trio.Event) -> None:
        """The system task that owns the client's connections and runs the flusher."""
        assert self._client is not None
        try:
            async with self._client:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._commits.run)
                    ready.set()
        except Exception as exc:  # a system task must not raise: it would crash the run
            self._failure = exc
        finally:
            self._closed = True
            ready.set()
            self._stopped.set()

    async def aclose(self) -> None:
        """Send the queued commits, then close the connections."""
        if self._client is None:
            return
        self._closed = True
        await self._commits.aclose()  # the flusher sends what is queued, then ends
        await self._stopped.wait()

    def _live(self) -> Client:
        if self._closed or self._client is None:
            raise StoreError("store is closed")
        return self._client

    async def _load_scripts(self) -> None:
        client = self._live()
        for name, source in _SCRIPTS.items():
            sha = await client.script_load(source)
            self._shas[name] = sha.decode() if isinstance(sha, bytes) else str(sha)

    async def _migrate(self) -> int:
        """Bring the store to `SCHEMA_VERSION`, one atomic step at a time; returns it."""
        client = self._live()
        while True:
            stored = await client.get(self._schema_key)
            version = int(stored) if stored is not None else 1
            check_readable(version)
            if version == SCHEMA_VERSION and stored is not None:
                return version
            rewrites: list[bytes | str] = []
            if version == 1:  # 1 → 2: durable timers name their message by tag
                payloads = await client.hgetall(self._timer_payloads)
                for key, payload in payloads.items():
                    new = timer_payload_v2(_bytes(payload))
                    if new is not None:
                        rewrites += [key, payload, new]
            if version == 2:  # 2 → 3: index the stored messages and profiles
                await self._index_texts_v3()
            step = [str(version), str(version + 1), *rewrites]
            await self._script("migrate", [self._schema_key, self._timer_payloads], step)

    async def _index_texts_v3(self) -> None:
        """Migration 2 → 3 (`schema.index_text_v3`), committed a page of records at a
        time; the version moves only after the last page, so a crash on the way means
        indexing again from the start, which puts the same entries again."""
        client = self._live()
        kv = self._base + "kv:"
        blocked: set[str] = set()
        async for log in client.scan_iter(match=_glob(self._base + "log:" + V3_BLOCKED_THREADS) + "*"):
            blocked.update(_text(m) for m in await client.lrange(log, 0, -1))
        frozen = frozenset(blocked)
        for family in ("msg:", "profile:"):
            keys = [_text(k) async for k in client.scan_iter(match=_glob(kv + family) + "*", count=1000)]
            for start in range(0, len(keys), 500):
                page = keys[start : start + 500]
                batch = Batch()
                for key, value in zip(page, await client.mget(page), strict=True):
                    if value is not None:
                        index_text_v3(batch, key.removeprefix(kv), _bytes(value), frozen)
                if batch:
                    await self.commit(batch)

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a read script, reloading the scripts once if the server lost them."""
        client = self._live()
        try:
            try:
                return await client.evalsha(self._shas[name], keys, args)
            except coredis.exceptions.NoScriptError:
                await self._load_scripts()
                return await client.evalsha(self._shas[name], keys, args)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis {name} failed: {exc}") from exc

    # -- writes ----------------------------------------------------------------------

    async def commit(self, batch: Batch) -> list[int]:
        """Apply `batch` atomically and durably (see `Store.commit`).

        If the caller is cancelled while its batch is still queued, the batch is withdrawn
        and nothing is applied; once the flusher has taken it, the call waits for the
        outcome, so a `Cancelled` out of `commit` always means "not applied". If the
        connection breaks while a batch is in flight, `StoreError` cannot tell whether it
        was applied (idempotency keys cover retries).
        """
        self._live()
        return await self._commits.commit(self._encode(batch))

    def _encode(self, batch: Batch) -> _Encoded:
        """`batch` as the commit script reads it (see ``commit.lua``), with its claims."""
        if (
            any(math.isnan(e.score) for e in batch.index_puts)
            or any(math.isnan(t.score) for t in batch.text_puts.values())
            or any(math.isnan(due) for due, _ in batch.timers.values())
        ):
            raise StoreError("batch refused: NaN score or due time")
        kv = self._base + "kv:"
        log = self._base + "log:"
        fence = batch.fence
        claims: list[str | msgspec.Raw] = []
        for k, value in batch.claims.items():
            claims += (kv + k, _lua_string(value))
        puts: list[str | msgspec.Raw] = []
        for k, value in batch.puts.items():
            puts += (kv + k, _lua_string(value))
        appends: list[str | msgspec.Raw] = []
        for stream, record in batch.appends:
            appends += (log + stream, _lua_string(record))
        timers: list[str | msgspec.Raw] = []
        for k, (due, payload) in batch.timers.items():
            timers += (k, _num(due), _lua_string(payload))
        index_deletes: list[str] = []
        for index, member in batch.index_deletes:
            index_deletes += (self._index_root(index), member)
        index_puts: list[str] = []
        for entry in batch.index_puts:
            index_puts += (
                self._index_root(entry.index),
                entry.member,
                _num(entry.score),
                _tags_encoder.encode(sorted(entry.tags)).decode(),
            )
        text_deletes: list[str] = []
        for index, member in batch.text_deletes:
            text_deletes += (self._text_root(index), member)
        text_puts: list[str] = []
        for text in batch.text_puts.values():
            text_puts += (
                self._text_root(text.index),
                text.member,
                _num(text.score),
                _tags_encoder.encode(text.words).decode(),
            )
        encoded = _batch_encoder.encode(
            (
                self.shard_key(fence[0], "epoch") if fence is not None else "",
                str(fence[1]) if fence is not None else "",
                claims,
                [kv + k for k in batch.deletes],
                puts,
                appends,
                [_lua_string(event) for event in batch.events],
                list(batch.timer_deletes),
                timers,
                index_deletes,
                index_puts,
                text_deletes,
                text_puts,
            )
        )
        return _Encoded(msgspec.Raw(encoded), list(batch.claims))

    def shard_key(self, shard: int, part: str) -> str:
        """The key of `part` (lease, epoch, mail) of `shard` when nodes share this store."""
        return f"{self._base}shard:{shard}:{part}"

    def _index_root(self, index: str) -> str:
        return f"{self._base}ix:{len(index)}:{index}:"

    def _text_root(self, index: str) -> str:
        return f"{self._base}tx:{len(index)}:{index}:"

    async def _send_group(self, group: list[_Encoded]) -> list[Outcome]:
        """Run the commit script once for all of `group`: it applies the batches in order
        and answers each alone (see ``commit.lua``)."""
        assert self._client is not None
        keys = [self._events_seq, self._events, self._timers, self._timer_payloads]
        groups = _batch_encoder.encode([encoded.batch for encoded in group])
        try:
            try:
                answers: Any = await self._client.evalsha(self._shas["commit"], keys, [groups])
            except coredis.exceptions.NoScriptError:  # not run at all: safe to send again
                await self._load_scripts_unchecked()
                answers = await self._client.evalsha(self._shas["commit"], keys, [groups])
        except coredis.exceptions.RedisError as exc:
            return [StoreError(f"redis commit failed: {exc}")] * len(group)
        return [_outcome(e, answer) for e, answer in zip(group, answers, strict=True)]

    async def _load_scripts_unchecked(self) -> None:
        # The flusher still runs while aclose drains the queue, after `_closed` is set.
        assert self._client is not None
        self._shas["commit"] = _text(await self._client.script_load(_SCRIPTS["commit"]))

    # -- reads -----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        client = self._live()
        try:
            return await client.get(self._base + "kv:" + key)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis get failed: {exc}") from exc

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The values of `keys`, in order (None where missing)."""
        client = self._live()
        if not keys:
            return []
        try:
            return list(await client.mget([self._base + "kv:" + k for k in keys]))
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis mget failed: {exc}") from exc

    async def log_tail(self, stream: str, n: int) -> list[bytes]:
        """The last `n` records of `stream`, oldest first."""
        client = self._live()
        if n <= 0:
            return []
        try:
            return list(await client.lrange(self._base + "log:" + stream, -n, -1))
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis lrange failed: {exc}") from exc

    async def log_length(self, stream: str) -> int:
        """How many records `stream` holds."""
        client = self._live()
        try:
            return await client.llen(self._base + "log:" + stream)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis llen failed: {exc}") from exc

    async def events_since(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Events with sequence number > `seq`, ascending, at most `limit`."""
        client = self._live()
        if limit <= 0:
            return []
        try:
            entries = await client.xrange(self._events, f"0-{max(seq, 0) + 1}", "+", count=limit)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xrange failed: {exc}") from exc
        return [
            (int(_text(e.identifier).partition("-")[2]), _bytes(e.field_values[b"p"]))
            for e in entries
        ]

    async def last_event_seq(self) -> int:
        """The highest event sequence number so far, 0 if none."""
        client = self._live()
        try:
            value = await client.get(self._events_seq)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis get failed: {exc}") from exc
        return int(value) if value is not None else 0

    async def first_event_seq(self) -> int:
        """The smallest event sequence number still kept (the next one when none is)."""
        client = self._live()
        try:
            first = await client.xrange(self._events, "-", "+", count=1)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xrange failed: {exc}") from exc
        if first:
            return int(_text(first[0].identifier).partition("-")[2])
        return await self.last_event_seq() + 1

    async def drop_events(self, through: int) -> None:
        """Drop the events with sequence number <= `through` (ids below ``0-<through+1>``)."""
        client = self._live()
        minid: Any = f"0-{max(through, 0) + 1}"  # a stream id; coredis types it as int
        try:
            await client.xtrim(self._events, PureToken.MINID, minid)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xtrim failed: {exc}") from exc

    async def trim_log(self, stream: str, keep: int) -> None:
        """Drop all but the newest `keep` records of `stream`."""
        client = self._live()
        key = self._base + "log:" + stream
        try:
            if keep > 0:
                await client.ltrim(key, -keep, -1)
            else:
                await client.delete([key])
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis ltrim failed: {exc}") from exc

    async def due_timers(self, until: float, limit: int) -> list[DueTimer]:
        """Durable timers due at or before `until`, earliest first, at most `limit`."""
        self._live()
        if limit <= 0 or math.isnan(until):
            return []
        rows = await self._script(
            "due", [self._timers, self._timer_payloads], [_num(until), str(limit)]
        )
        return [
            DueTimer(_text(rows[i]), float(rows[i + 1]), _bytes(rows[i + 2]))
            for i in range(0, len(rows), 3)
        ]

    async def next_timer_due(self) -> float | None:
        """The due time of the earliest durable timer, or None."""
        client = self._live()
        try:
            first = await client.zrange(self._timers, 0, 0, withscores=True)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis zrange failed: {exc}") from exc
        if not first:
            return None
        return float(first[0][1])

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
        self._live()
        if limit <= 0:
            return []
        root = self._index_root(index)
        keys = [root + "all"] + [root + "t:" + t for t in sorted(tags)]
        args = [str(limit), "1" if descending else "0"]
        args += ["1", _num(after[0]), after[1]] if after is not None else ["0", "", ""]
        rows = await self._script("query", keys, args)
        return [(_text(rows[i]), float(rows[i + 1])) for i in range(0, len(rows), 2)]

    async def text_query(
        self, index: str, query: str, limit: int, *, after: tuple[float, str] | None = None
    ) -> list[tuple[str, float]]:
        """Members of text index `index` with every word of `query` (see `Store.text_query`)."""
        self._live()
        found = words(query)
        if limit <= 0 or not found:
            return []
        root = self._text_root(index)
        # The query script walks the rarest of the word sets; its first key (the set of
        # every member, for a query without tags) is never read when words are given.
        keys = [root + "words"] + [root + "w:" + w for w in found]
        args = [str(limit), "1"]
        args += ["1", _num(after[0]), after[1]] if after is not None else ["0", "", ""]
        rows = await self._script("query", keys, args)
        return [(_text(rows[i]), float(rows[i + 1])) for i in range(0, len(rows), 2)]

    async def index_count(self, index: str, tags: frozenset[str]) -> int:
        """How many members of `index` have all `tags`."""
        self._live()
        root = self._index_root(index)
        ordered = sorted(tags)
        keys = [root + "all", root + "pairs"] + [root + "t:" + t for t in ordered]
        # The pair field as the commit script spells it: byte length of the first tag.
        field = f"{len(ordered[0].encode())}:{ordered[0]}{ordered[1]}" if len(ordered) == 2 else ""
        return int(await self._script("count", keys, [field]))


def _glob(literal: str) -> str:
    """`literal` as a SCAN pattern that matches only itself (a prefix may hold `*`, `[`…)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in literal)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
