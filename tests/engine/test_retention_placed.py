"""Retention on several nodes (one Redis store): only the node holding the shard of
`retention.SERVICE` writes the marks, drops old events and deletes expired keys, fenced by
that shard's token; every node learns which events are gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.polling import until
from tidings.engine import Batch, expire_at, open_engine
from tidings.engine.placement import Placement
from tidings.engine.retention import MARKS, SERVICE
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.redis_shards import ShardStore
from tidings.engine.system import Engine

SHARDS = 8
START = 1_800_000_000.0
SWEEP_S = 0.05


class Clock:
    """Wall time the test moves by hand (the sweeps run on trio's real clock)."""

    def __init__(self) -> None:
        self.at = START

    def now(self) -> float:
        return self.at


@asynccontextmanager
async def node(url: str, name: str, clock: Clock, heartbeat: float = 0.0) -> AsyncIterator[Engine]:
    async with RedisStore(url, prefix="t:") as store:
        placement = Placement(ShardStore(store, name), count=SHARDS, lease=1.5, heartbeat=heartbeat)
        async with open_engine(
            store,
            [],
            placement=placement,
            clock=clock,
            events_kept_s=60.0,
            retention_every=SWEEP_S,
        ) as engine:
            with trio.fail_after(10):
                await placement.ready.wait()
            yield engine


async def test_a_node_that_lost_the_retention_shard_deletes_no_expired_key(
    redis_url: str,
) -> None:
    clock = Clock()
    # no heartbeat: node a keeps believing it holds every shard, as a paused node does
    async with RedisStore(redis_url, prefix="t:") as other, node(redis_url, "a", clock, 600) as a:
        assert a.placement is not None
        placement = a.placement

        async def holds_all() -> bool:
            return len(placement.owned) == SHARDS

        await until(holds_all, "node a holds every shard")
        batch = Batch()
        batch.put("k", b"kept")
        expire_at(batch, "k", START + 10)
        batch.event(b"{}")
        await other.commit(batch)

        async def marked() -> bool:  # a, the holder, writes the marks
            return await other.get(MARKS) is not None

        await until(marked, "node a writes a retention mark")
        marks = await other.get(MARKS)

        # another node takes the shard of SERVICE while a does not look
        shard = placement.shard(SERVICE)
        await other._live().delete([other.shard_key(shard, "lease")])
        assert await ShardStore(other, "z").acquire(shard, 60_000) > 0
        fenced = placement.fenced
        clock.at = START + 120  # k expired, and so did the event and its mark

        async def refused() -> bool:
            return placement.fenced > fenced

        await until(refused, "node a's sweep is fenced")
        assert shard not in placement.owned
        assert await other.get("k") == b"kept"  # not deleted by the stale holder
        assert await other.get(MARKS) == marks  # nor its marks rewritten


async def test_a_node_without_the_retention_shard_learns_which_events_are_gone(
    redis_url: str,
) -> None:
    clock = Clock()
    async with node(redis_url, "a", clock) as a, node(redis_url, "b", clock) as b:
        assert a.placement is not None and b.placement is not None
        pa, pb = a.placement, b.placement

        async def settled() -> bool:  # split between the two, the service's on one
            return len(pa.owned) + len(pb.owned) == SHARDS and bool(pa.owned) and bool(pb.owned)

        await until(settled, "the shards settle on a and b")
        holder, reader = (a, b) if pa.owns(SERVICE) else (b, a)
        batch = Batch()
        batch.event(b"{}")
        (seq,) = await holder.store.commit(batch)
        holder.events.published([seq], batch.events)

        async def marked() -> bool:
            return await holder.store.get(MARKS) is not None

        await until(marked, "the holder writes a mark")
        clock.at = START + 120

        async def dropped() -> bool:
            return reader.events.oldest > seq

        await until(dropped, "the other node learns the events are dropped")
        assert await holder.store.events_since(0, 10) == []
