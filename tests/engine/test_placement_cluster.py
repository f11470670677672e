"""Several nodes on a real Redis Cluster (three local masters, `redis+cluster://`): the
store's keys share one hash slot, so the commit script, the fencing check, the leases,
the shard mail and the event stream all run on that slot's master as on one server."""

from __future__ import annotations

import msgspec
import pytest
import trio

from tests.engine.test_placement import Add, Tally, TooBig, key_on, node, ready
from tidings.engine import Batch
from tidings.engine.store import open_store
from tidings.engine.store.base import Fenced
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.redis_shards import ShardStore


async def test_open_store_takes_a_redis_cluster_url(redis_cluster_url: str) -> None:
    store = await open_store(redis_cluster_url)
    try:
        assert isinstance(store, RedisStore)
        batch = Batch()
        batch.put("k", b"v")
        batch.event(b"e")
        assert await store.commit(batch) == [1]
        assert await store.get("k") == b"v"
        assert await ShardStore(store, "n").now_id()  # TIME, routed to the store's slot
    finally:
        await store.aclose()
    with pytest.raises(ValueError, match="no database"):
        await open_store(redis_cluster_url + "/1")


async def test_two_nodes_on_a_redis_cluster_answer_asks_and_fence_a_stale_write(
    redis_cluster_url: str,
) -> None:
    url = redis_cluster_url
    async with node(url, "a") as a, node(url, "b") as b:
        await ready(a, b)
        there = key_on(b, ["a", "b"])
        assert await a.ask(("counter", there), Add(2)) == 2
        with pytest.raises(TooBig):
            await a.ask(("counter", there), Add(5000))
        assert b.resident == 1 and a.resident == 0
        event = Batch()
        event.event(b"from-b")
        await b.commit(event)
        with trio.fail_after(5):
            async for seq, payload in a.events.subscribe(0):
                assert (seq, payload) == (1, b"from-b")
                break
        assert b.placement
        token = b.placement.token(("counter", there))
        async with RedisStore(url, prefix="t:") as other:
            stale = Batch()
            stale.put(f"counter:{there}", b"stale")
            stale.fence = (token[0], token[1] - 1)
            with pytest.raises(Fenced):
                await other.commit(stale)
            state = await other.get(f"counter:{there}")
            assert msgspec.json.decode(state or b"", type=Tally).count == 2
