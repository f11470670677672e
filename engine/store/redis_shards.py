"""What nodes sharing one Redis store keep there besides the data: shard leases, the
members' heartbeats, each shard's durable mailbox, each node's replies, and a blocking
read of the event log.

All keys carry the store's hash tag (see `redis`), so the commit script can check a
batch's fencing token against ``{p}shard:<n>:epoch`` atomically with the write.

- ``{p}shard:<n>:lease``  string node id, PX the lease time (`acquire`/`renew`/`release`)
- ``{p}shard:<n>:epoch``  counter: INCR on every acquisition, the fencing token
- ``{p}shard:<n>:mail``   stream of mail for the shard's actors, consumer group ``owner``
- ``{p}members``          sorted set node → last heartbeat (server ms)
- ``{p}node:<id>:replies`` stream of answers to the asks that node forwarded
- ``{p}notices``          stream of best-effort notices to every node (web chat frames)
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final

import coredis
import coredis.exceptions

from tidings.engine.store.base import StoreError
from tidings.engine.store.redis import Client, RedisStore

_LUA: Final = resources.files(__package__).joinpath("lua")
_SCRIPTS: Final = {
    name: _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    for name in ("acquire", "renew", "release", "members", "put_back", "pass_on", "now")
}
GROUP: Final = "owner"
REPLIES_KEPT: Final = 10_000  # a node's reply stream is trimmed to about this many


class ShardStore:
    """Leases, membership and node-to-node mail on the Redis of `store` (opened)."""

    def __init__(self, store: RedisStore, node: str) -> None:
        self.store = store
        self.node = node
        self._base = store._base
        self._members = self._base + "members"
        self.notices_key = self._base + "notices"
        self._shas: dict[str, str] = {}

    def replies_key(self, node: str) -> str:
        """The stream of answers to `node`'s forwarded asks."""
        return f"{self._base}node:{node}:replies"

    def _client(self) -> Client:
        return self.store._live()

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        client = self._client()
        try:
            sha = self._shas.get(name)
            if sha is None:
                sha = self._shas[name] = _text(await client.script_load(_SCRIPTS[name]))
            try:
                return await client.evalsha(sha, keys, args)
            except coredis.exceptions.NoScriptError:
                del self._shas[name]
                return await self._run(name, keys, args)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis {name} failed: {exc}") from exc

    # -- leases and members ------------------------------------------------------------

    async def heartbeat(self, lease_ms: int, *, leaving: bool = False) -> list[str]:
        """Record this node alive (or gone); the nodes alive within a lease, sorted."""
        alive = await self._run(
            "members", [self._members], [self.node, str(lease_ms), "1" if leaving else "0"]
        )
        return sorted(_text(n) for n in alive)

    async def acquire(self, shard: int, lease_ms: int) -> int:
        """Take `shard`'s lease if free; its new epoch, or 0 when another node holds it."""
        keys = [self.store.shard_key(shard, "lease"), self.store.shard_key(shard, "epoch")]
        epoch = int(await self._run("acquire", keys, [self.node, str(lease_ms)]))
        if epoch:
            await self._ensure_group(shard)
        return epoch

    async def renew(self, held: dict[int, int], lease_ms: int) -> set[int]:
        """Extend the leases of `held` (shard → epoch); the shards lost meanwhile."""
        if not held:
            return set()
        shards = list(held)
        keys: list[str] = []
        for shard in shards:
            keys += [self.store.shard_key(shard, "lease"), self.store.shard_key(shard, "epoch")]
        args = [self.node, str(lease_ms), *(str(held[s]) for s in shards)]
        kept = await self._run("renew", keys, args)
        return {shard for shard, ok in zip(shards, kept, strict=True) if not int(ok)}

    async def release(self, shard: int, epoch: int) -> None:
        """Give `shard`'s lease up, if still held at `epoch`."""
        keys = [self.store.shard_key(shard, "lease"), self.store.shard_key(shard, "epoch")]
        await self._run("release", keys, [self.node, str(epoch)])

    # -- mail ----------------------------------------------------------------------------

    async def _ensure_group(self, shard: int) -> None:
        try:
            await self._client().xgroup_create(
                self.store.shard_key(shard, "mail"), GROUP, identifier="0", mkstream=True
            )
        except coredis.exceptions.StreamDuplicateConsumerGroupError:
            pass  # made by an earlier owner
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xgroup failed: {exc}") from exc

    async def send(self, items: list[tuple[str, bytes]]) -> None:
        """Append each (stream, payload) in one round trip: mail to shards and replies."""
        client = self._client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for stream, payload in items:
                    if stream == self.notices_key:
                        pipe.xadd(
                            stream, {"m": payload}, trim_strategy=coredis.PureToken.MAXLEN,
                            threshold=REPLIES_KEPT,
                            trim_operator=coredis.PureToken.APPROXIMATELY,
                        )  # fmt: skip
                    else:
                        pipe.xadd(stream, {"m": payload})
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xadd failed: {exc}") from exc

    async def pass_on(self, items: list[tuple[int, str, str, bytes]]) -> None:
        """Mail (shard, id) handed on as `payload` to `stream`, each atomically with the
        acknowledgement of the original, and only while the original is still this
        node's (see ``pass_on.lua``)."""
        for shard, ident, stream, payload in items:
            keys = [self.store.shard_key(shard, "mail"), stream]
            await self._run("pass_on", keys, [GROUP, self.node, ident, payload])

    async def claim(self, shard: int, idle_ms: int = 0) -> list[tuple[str, bytes]]:
        """Mail of `shard` read by a node (and idle for `idle_ms`) but never
        acknowledged, now this node's: (id, payload), oldest first."""
        client = self._client()
        stream = self.store.shard_key(shard, "mail")
        found: list[tuple[str, bytes]] = []
        start = "0-0"
        try:
            while True:
                reply: Any = await client.xautoclaim(
                    stream, GROUP, self.node, idle_ms, start, count=500
                )
                start = _text(reply[0])
                found += [(_text(e.identifier), _payload(e)) for e in reply[1] if e.field_values]
                if start == "0-0":
                    return found
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xautoclaim failed: {exc}") from exc

    async def receive(self, shards: list[int], block_ms: int) -> list[tuple[int, str, bytes]]:
        """New mail of `shards` as (shard, id, payload), waiting up to `block_ms`."""
        if not shards:
            return []
        client = self._client()
        streams = {self.store.shard_key(s, "mail"): ">" for s in shards}
        by_stream = {self.store.shard_key(s, "mail"): s for s in shards}
        try:
            reply = await client.xreadgroup(GROUP, self.node, streams, count=500, block=block_ms)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xreadgroup failed: {exc}") from exc
        return [
            (by_stream[_text(stream)], _text(e.identifier), _payload(e))
            for stream, entries in (reply or {}).items()
            for e in entries
        ]

    async def put_back(self, items: list[tuple[int, str, bytes]]) -> None:
        """Mail (shard, id, payload) this node read for a shard it no longer owns: each
        goes to the end of its stream again, atomically with acknowledging the original,
        unless the shard's owner claimed the original meanwhile."""
        by_shard: dict[int, list[bytes | str]] = {}
        for shard, ident, payload in items:
            by_shard.setdefault(shard, [GROUP, self.node]).extend([ident, payload])
        for shard, args in by_shard.items():
            await self._run("put_back", [self.store.shard_key(shard, "mail")], args)

    def done_key(self, shard: int, ident: str) -> str:
        """The store key (a `Batch.put` key) marking mail `ident` of `shard` handled."""
        return f"mail-done:{shard}:{ident}"

    async def handled(self, items: list[tuple[int, str]]) -> list[bool]:
        """Whether each mail (shard, id) was handled already (its turn committed)."""
        if not items:
            return []
        found = await self.store.get_many([self.done_key(s, i) for s, i in items])
        return [value is not None for value in found]

    async def done(self, items: list[tuple[int, str, tuple[str, bytes] | None]]) -> None:
        """Acknowledge and delete handled mail (shard, id) with its done mark, and send
        its answer (reply stream, payload) if any, all in one transaction."""
        client = self._client()
        kv = self._base + "kv:"
        try:
            async with client.pipeline(transaction=True) as pipe:
                for shard, ident, answer in items:
                    if answer is not None:
                        pipe.xadd(
                            answer[0], {"m": answer[1]}, trim_strategy=coredis.PureToken.MAXLEN,
                            threshold=REPLIES_KEPT,
                            trim_operator=coredis.PureToken.APPROXIMATELY,
                        )  # fmt: skip
                    stream = self.store.shard_key(shard, "mail")
                    pipe.xack(stream, GROUP, [ident])
                    pipe.xdel(stream, [ident])
                    pipe.delete([kv + self.done_key(shard, ident)])
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xack failed: {exc}") from exc

    async def now_id(self) -> str:
        """A stream id of the server's current time: read replies after it."""
        seconds, micros = await self._run("now", [self._members], [])
        return f"{int(seconds) * 1000 + int(micros) // 1000}-0"

    async def read(self, stream: str, after: str, block_ms: int) -> list[tuple[str, bytes]]:
        """Entries of `stream` (replies, notices) after id `after`: (id, payload)."""
        client = self._client()
        try:
            reply = await client.xread({stream: after}, count=1000, block=block_ms)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xread failed: {exc}") from exc
        return [(_text(e.identifier), _payload(e)) for _, es in (reply or {}).items() for e in es]

    async def events_after(self, seq: int, block_ms: int) -> list[tuple[int, bytes]]:
        """Events with seq > `seq` (up to 1000), waiting up to `block_ms` for one."""
        client = self._client()
        try:
            reply = await client.xread({self.store._events: f"0-{seq}"}, count=1000, block=block_ms)
        except coredis.exceptions.RedisError as exc:
            raise StoreError(f"redis xread failed: {exc}") from exc
        return [
            (int(_text(e.identifier).partition("-")[2]), _payload(e, b"p"))
            for _, es in (reply or {}).items()
            for e in es
        ]


def _payload(entry: Any, field: bytes = b"m") -> bytes:
    value = entry.field_values[field]
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
