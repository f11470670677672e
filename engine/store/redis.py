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

Writes: each batch is one call of a Lua script, so it is all-or-nothing and its events
get gap-free sequence numbers from an INCRBY in the same atomic unit. A single flusher
task takes all batches waiting at that moment and sends them as ONE pipeline, in call
order (group commit). The script is a Redis 7 "shebang" script, so an out-of-memory
server refuses it before it writes anything; inputs that Redis would reject mid-script
(NaN scores, NaN due times) are refused in Python before sending.

Durability is the server's: acknowledged means durable only with ``appendonly yes`` and
``appendfsync always`` (the test server runs that way).

Keys: every key starts with ``{<prefix>}``; the braces make the prefix the Redis Cluster
hash tag, so ALL keys of one store live in one hash slot. A batch may touch any kv key,
log, timer and index at once and must be atomic, which a Lua script can only be within
one slot: the price is that one store does not spread over cluster shards.

- ``{p}kv:<key>``               string
- ``{p}log:<stream>``           list (RPUSH)
- ``{p}events:seq``             counter; ``{p}events`` stream with ids ``0-<seq>``
- ``{p}timers``                 sorted set key→due; ``{p}timers:payload`` hash key→payload
- ``{p}ix:<len>:<index>:all``   sorted set of every member (score)
- ``{p}ix:<len>:<index>:t:<tag>``  sorted set of the members with that tag
- ``{p}ix:<len>:<index>:tags``  hash member→JSON list of its tags (so a put replaces them)
- ``{p}ix:<len>:<index>:pairs`` hash pair of tags→member count (two-tag `index_count`)

The index name is length-prefixed so that no (index, tag) pair can spell another's key.
"""

from __future__ import annotations

import math
from typing import Any, Final

import coredis
import coredis.exceptions
import msgspec
import trio
from tidings.engine.store.base import Batch, DueTimer, OpenedStore, StoreError

_COMMIT_LUA: Final = r"""#!lua
-- KEYS[1] event counter, KEYS[2] event stream, KEYS[3] timers zset, KEYS[4] timer payloads;
-- ARGV[1..8] counts of: deletes, puts, appends, events, timer deletes, timer sets,
-- index deletes, index puts; then each section's keys and arguments, in that order.
local ki, ai = 5, 9
local function key() local k = KEYS[ki]; ki = ki + 1; return k end
local function arg() local a = ARGV[ai]; ai = ai + 1; return a end
local n = {}
for i = 1, 8 do n[i] = tonumber(ARGV[i]) end
for _ = 1, n[1] do redis.call('DEL', key()) end
for _ = 1, n[2] do local k = key(); redis.call('SET', k, arg()) end
for _ = 1, n[3] do local k = key(); redis.call('RPUSH', k, arg()) end
local first = 0
if n[4] > 0 then
  first = redis.call('INCRBY', KEYS[1], n[4]) - n[4] + 1
  for i = 0, n[4] - 1 do
    redis.call('XADD', KEYS[2], string.format('0-%d', first + i), 'p', arg())
  end
end
for _ = 1, n[5] do
  local k = arg()
  redis.call('ZREM', KEYS[3], k)
  redis.call('HDEL', KEYS[4], k)
end
for _ = 1, n[6] do
  local k = arg(); local due = arg(); local payload = arg()
  redis.call('ZADD', KEYS[3], due, k)
  redis.call('HSET', KEYS[4], k, payload)
end
-- Members per pair of tags (sorted, the first length-prefixed): two-tag counts in O(1).
local function count_pairs(pairs, tags, delta)
  for i = 1, #tags do
    for j = i + 1, #tags do
      local field = #tags[i] .. ':' .. tags[i] .. tags[j]
      if redis.call('HINCRBY', pairs, field, delta) == 0 then redis.call('HDEL', pairs, field) end
    end
  end
end
local function unindex(all, tagmap, pairs, member, tagprefix)
  local old = redis.call('HGET', tagmap, member)
  if old then
    local tags = cjson.decode(old)
    for _, t in ipairs(tags) do redis.call('ZREM', tagprefix .. t, member) end
    count_pairs(pairs, tags, -1)
    redis.call('HDEL', tagmap, member)
    redis.call('ZREM', all, member)
  end
end
for _ = 1, n[7] do
  local all = key(); local tagmap = key(); local pairs = key()
  local member = arg(); local tagprefix = arg()
  unindex(all, tagmap, pairs, member, tagprefix)
end
for _ = 1, n[8] do
  local all = key(); local tagmap = key(); local pairs = key()
  local member = arg(); local score = arg(); local tagprefix = arg()
  local ntags = tonumber(arg()); local tags = arg()
  unindex(all, tagmap, pairs, member, tagprefix)
  redis.call('ZADD', all, score, member)
  for _ = 1, ntags do redis.call('ZADD', key(), score, member) end
  redis.call('HSET', tagmap, member, tags)
  if ntags > 1 then count_pairs(pairs, cjson.decode(tags), 1) end
end
return {first, n[4]}
"""

_QUERY_LUA: Final = r"""#!lua flags=no-writes
-- KEYS[1] the index's `all` set, KEYS[2..] its tag sets. ARGV: limit, descending (1/0),
-- has cursor (1/0), cursor score, cursor member. Returns member, score, member, ...
local limit = tonumber(ARGV[1])
local desc = ARGV[2] == '1'
local driver, others = KEYS[1], {}
if #KEYS > 1 then
  -- Walk the rarest tag's set in score order and keep the members the others have.
  local best, bestn = 2, -1
  for i = 2, #KEYS do
    local c = redis.call('ZCARD', KEYS[i])
    if c == 0 then return {} end
    if bestn < 0 or c < bestn then best, bestn = i, c end
  end
  driver = KEYS[best]
  for i = 2, #KEYS do if i ~= best then others[#others + 1] = KEYS[i] end end
end
local size = redis.call('ZCARD', driver)
-- Bytewise order, as Redis orders ties; Lua's `<` follows the server's locale.
local function less(a, b)
  local m = math.min(#a, #b)
  for i = 1, m do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- pos: ascending rank where the walk starts.
local pos
if ARGV[3] == '1' then
  local s, m = ARGV[4], ARGV[5]
  -- Ranks [lo, hi) hold the ties at score s, in member order: binary search the cursor.
  local lo = redis.call('ZCOUNT', driver, '-inf', '(' .. s)
  local hi = redis.call('ZCOUNT', driver, '-inf', s)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local x = redis.call('ZRANGE', driver, mid, mid)[1]
    local beyond
    if desc then beyond = not less(x, m) else beyond = less(m, x) end
    if beyond then hi = mid else lo = mid + 1 end
  end
  if desc then pos = lo - 1 else pos = lo end
else
  if desc then pos = size - 1 else pos = 0 end
end
local out, found = {}, 0
local chunk = limit
if #others > 0 then chunk = math.max(limit * 2, 64) end
while found < limit and pos >= 0 and pos < size do
  local rows, from, to, step
  if desc then
    local lo = math.max(pos - chunk + 1, 0)
    rows = redis.call('ZRANGE', driver, lo, pos, 'WITHSCORES')
    from, to, step = #rows - 1, 1, -2
    pos = lo - 1
  else
    rows = redis.call('ZRANGE', driver, pos, pos + chunk - 1, 'WITHSCORES')
    from, to, step = 1, #rows - 1, 2
    pos = pos + chunk
  end
  for i = from, to, step do
    local member = rows[i]
    local keep = true
    for _, o in ipairs(others) do
      if not redis.call('ZSCORE', o, member) then keep = false; break end
    end
    if keep then
      out[#out + 1] = member
      out[#out + 1] = rows[i + 1]
      found = found + 1
      if found >= limit then break end
    end
  end
end
return out
"""

_COUNT_LUA: Final = r"""#!lua flags=no-writes
-- KEYS[1] the index's `all` set, KEYS[2] its pair counts, KEYS[3..] its tag sets;
-- ARGV[1] the pair-count field when there are exactly two tags.
if #KEYS == 2 then return redis.call('ZCARD', KEYS[1]) end
if #KEYS == 3 then return redis.call('ZCARD', KEYS[3]) end
if #KEYS == 4 then return tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') end
return redis.call('ZINTERCARD', #KEYS - 2, unpack(KEYS, 3))
"""

_DUE_LUA: Final = r"""#!lua flags=no-writes
-- KEYS[1] timers zset, KEYS[2] payloads. ARGV: until, limit. Returns key, due, payload, ...
local rows = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0,
                        tonumber(ARGV[2]), 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], rows[i]) or ''
end
return out
"""

_tags_encoder = msgspec.json.Encoder()


def _num(value: float) -> str:
    """`value` as Redis parses it back to the same double."""
    return repr(float(value))


class _Commit:
    """One `commit` call waiting for the flusher."""

    __slots__ = ("args", "done", "error", "keys", "seqs", "taken", "withdrawn")

    def __init__(self, keys: list[str], args: list[bytes | str]) -> None:
        self.keys = keys
        self.args = args
        self.done = trio.Event()
        self.taken = False
        self.withdrawn = False
        self.seqs: list[int] = []
        self.error: StoreError | None = None


class RedisStore(OpenedStore):
    """A `Store` on a Redis 7+ server: one Lua script call per batch, pipelined.

    Open it with ``await RedisStore(url, prefix="tidings:").open()`` (returns the store)
    or use it as an async context manager. See the module docstring for the key layout.
    """

    def __init__(self, url: str, *, prefix: str = "tidings:") -> None:
        self.url = url
        self.prefix = prefix
        self._base = "{" + prefix + "}"
        self._events_seq = self._base + "events:seq"
        self._events = self._base + "events"
        self._timers = self._base + "timers"
        self._timer_payloads = self._base + "timers:payload"
        self._client: coredis.Redis[bytes] | None = None
        self._closed = True
        self._failure: BaseException | None = None
        self._stopped = trio.Event()
        self._send, self._receive = trio.open_memory_channel[_Commit](math.inf)
        self._shas: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> RedisStore:
        """Connect, check the server answers and load the scripts; returns self."""
        if self._client is not None:
            raise StoreError("store is already open")
        try:
            self._client = coredis.Redis.from_url(self.url, decode_responses=False)
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
                    nursery.start_soon(self._flusher)
                    ready.set()
        except Exception as exc:  # a system task must not raise: it would crash the run
            self._failure = exc
        finally:
            self._closed = True
            ready.set()
            self._stopped.set()
            # Callers still queued (the host died) get an answer rather than waiting forever.
            while True:
                try:
                    request = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                request.error = StoreError("store is closed")
                request.done.set()

    async def aclose(self) -> None:
        """Send the queued commits, then close the connections."""
        if self._client is None:
            return
        self._closed = True
        self._send.close()  # the flusher drains what is queued, then ends
        await self._stopped.wait()

    def _live(self) -> coredis.Redis[bytes]:
        if self._closed or self._client is None:
            raise StoreError("store is closed")
        return self._client

    async def _load_scripts(self) -> None:
        client = self._live()
        for name, source in (
            ("commit", _COMMIT_LUA),
            ("query", _QUERY_LUA),
            ("count", _COUNT_LUA),
            ("due", _DUE_LUA),
        ):
            sha = await client.script_load(source)
            self._shas[name] = sha.decode() if isinstance(sha, bytes) else str(sha)

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
        request = _Commit(*self._encode(batch))
        try:
            self._send.send_nowait(request)
        except trio.ClosedResourceError:
            raise StoreError("store is closed") from None
        try:
            await request.done.wait()
        except trio.Cancelled:
            if not request.taken:
                request.withdrawn = True
                raise
            with trio.CancelScope(shield=True):
                await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.seqs

    def _encode(self, batch: Batch) -> tuple[list[str], list[bytes | str]]:
        """The commit script's KEYS and ARGV for `batch`."""
        if any(math.isnan(e.score) for e in batch.index_puts) or any(
            math.isnan(due) for due, _ in batch.timers.values()
        ):
            raise StoreError("batch refused: NaN score or due time")
        base = self._base
        keys = [self._events_seq, self._events, self._timers, self._timer_payloads]
        args: list[bytes | str] = [
            str(len(batch.deletes)),
            str(len(batch.puts)),
            str(len(batch.appends)),
            str(len(batch.events)),
            str(len(batch.timer_deletes)),
            str(len(batch.timers)),
            str(len(batch.index_deletes)),
            str(len(batch.index_puts)),
        ]
        keys += [base + "kv:" + k for k in batch.deletes]
        for k, value in batch.puts.items():
            keys.append(base + "kv:" + k)
            args.append(value)
        for stream, record in batch.appends:
            keys.append(base + "log:" + stream)
            args.append(record)
        args += batch.events
        args += batch.timer_deletes
        for k, (due, payload) in batch.timers.items():
            args += [k, _num(due), payload]
        for index, member in batch.index_deletes:
            root = self._index_root(index)
            keys += [root + "all", root + "tags", root + "pairs"]
            args += [member, root + "t:"]
        for entry in batch.index_puts:
            root = self._index_root(entry.index)
            tags = sorted(entry.tags)
            keys += [root + "all", root + "tags", root + "pairs"]
            keys += [root + "t:" + t for t in tags]
            args += [entry.member, _num(entry.score), root + "t:", str(len(tags))]
            args.append(_tags_encoder.encode(tags))
        return keys, args

    def _index_root(self, index: str) -> str:
        return f"{self._base}ix:{len(index)}:{index}:"

    async def _flusher(self) -> None:
        """Send every waiting batch as one pipeline, in call order, and answer the callers."""
        async for first in self._receive:
            group = [first]
            while True:
                try:
                    group.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            group = [r for r in group if not r.withdrawn]
            for request in group:
                request.taken = True
            try:
                await self._send_group(group)
            except Exception as exc:  # the flusher must survive to answer later callers
                for request in group:
                    if request.error is None and not request.seqs:
                        request.error = StoreError(f"redis commit failed: {exc!r}")
            finally:
                for request in group:
                    request.done.set()

    async def _send_group(self, group: list[_Commit]) -> None:
        assert self._client is not None
        pending = group
        for attempt in range(2):
            async with self._client.pipeline(transaction=False, raise_on_error=False) as pipe:
                replies = [pipe.evalsha(self._shas["commit"], r.keys, r.args) for r in pending]
            retry: list[_Commit] = []
            for request, reply in zip(pending, replies, strict=True):
                try:
                    answer: Any = await reply
                except coredis.exceptions.NoScriptError:
                    retry.append(request)  # not run at all: safe to send again
                    continue
                except coredis.exceptions.RedisError as exc:
                    request.error = StoreError(f"batch refused: {exc}")
                    continue
                first, count = int(answer[0]), int(answer[1])
                request.seqs = list(range(first, first + count))
            if not retry:
                return
            if attempt == 0:
                await self._load_scripts_unchecked()
            pending = retry
        for request in pending:
            request.error = StoreError("redis lost the commit script")

    async def _load_scripts_unchecked(self) -> None:
        # The flusher still runs while aclose drains the queue, after `_closed` is set.
        assert self._client is not None
        self._shas["commit"] = _text(await self._client.script_load(_COMMIT_LUA))

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

    async def index_count(self, index: str, tags: frozenset[str]) -> int:
        """How many members of `index` have all `tags`."""
        self._live()
        root = self._index_root(index)
        ordered = sorted(tags)
        keys = [root + "all", root + "pairs"] + [root + "t:" + t for t in ordered]
        # The pair field as the commit script spells it: byte length of the first tag.
        field = f"{len(ordered[0].encode())}:{ordered[0]}{ordered[1]}" if len(ordered) == 2 else ""
        return int(await self._script("count", keys, [field]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
