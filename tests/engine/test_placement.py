"""Several engines (nodes) on one Redis store: shards held through leases whose epoch
fences every write, asks and tells across nodes, hand-over on leave, timers fire once.

These run against a real redis-server with real time: a lease expires on the server's
clock, so the leases here are short (well under a second)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import msgspec
import pytest
import trio

from tidings.engine import (
    Actor,
    Batch,
    Forward,
    Refused,
    Request,
    StatefulActor,
    handler,
    open_engine,
)
from tidings.engine.placement import Placement, assign
from tidings.engine.store.base import Fenced
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.redis_shards import ShardStore
from tidings.engine.system import Engine

SHARDS = 8
LEASE = 1.5


class Tally(msgspec.Struct):
    count: int = 0
    nodes: list[str] = []


class Add(Request[int]):
    n: int


class Refuse(Request[None]):
    why: str


class TooBig(Refused):
    """A refusal with a field of its own, to check typed errors cross nodes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit}")
        self.limit = limit


class Ding(msgspec.Struct, tag="test.placement.ding"):
    label: str


class Arm(Request[None]):
    due: float


class CounterActor(StatefulActor[None, Tally]):
    kind = "counter"
    state_type = Tally
    __slots__ = ()

    @handler
    async def add(self, msg: Add) -> int:
        state = self.state or Tally()
        if msg.n > 1000:
            raise TooBig(1000)
        state.count += msg.n
        self.state = state
        await self.save()
        return state.count

    @handler
    async def arm(self, msg: Arm) -> None:
        batch = Batch()
        self.ctx.timers.set_durable(batch, f"ding:{self.key}", msg.due, self.address, Ding("x"))
        await self.ctx.commit(batch)

    @handler
    async def ding(self, msg: Ding) -> None:
        batch = Batch()
        batch.append(f"dings:{self.key}", b"1")
        await self.ctx.commit(batch)


class Via(Request[int]):
    counter: str
    n: int


class RelayActor(Actor[None]):
    """Hands an `Add` on to a counter with `Forward`: the counter answers the asker."""

    kind = "relay"
    __slots__ = ()

    @handler
    async def via(self, msg: Via) -> Forward:
        return Forward(("counter", msg.counter), Add(msg.n))


@asynccontextmanager
async def node(url: str, name: str, heartbeat: float = 0.0) -> AsyncIterator[Engine]:
    async with RedisStore(url, prefix="t:") as store:
        shards = ShardStore(store, name)
        placement = Placement(shards, count=SHARDS, lease=LEASE, heartbeat=heartbeat)
        async with open_engine(store, [CounterActor, RelayActor], placement=placement) as engine:
            yield engine


async def ready(*engines: Engine) -> None:
    with trio.fail_after(10):
        for engine in engines:
            assert engine.placement is not None
            await engine.placement.ready.wait()
        for _ in range(200):  # the nodes settle within a few heartbeats
            if sum(len(e.placement.owned) for e in engines if e.placement) == SHARDS:
                return
            await trio.sleep(0.05)
        raise AssertionError("the shards did not settle")


def key_on(engine: Engine, members: list[str], kind: str = "counter") -> str:
    """A key of `kind` whose shard `engine`'s node should own among `members`."""
    assert engine.placement is not None
    for i in range(10_000):
        if assign(engine.placement.shard((kind, f"c{i}")), members) == engine.placement.node:
            return f"c{i}"
    raise AssertionError("no key found")


async def test_two_nodes_split_the_shards_and_answer_asks_across_nodes(redis_url: str) -> None:
    async with node(redis_url, "a") as a, node(redis_url, "b") as b:
        await ready(a, b)
        assert a.placement and b.placement
        assert not a.placement.owned.keys() & b.placement.owned.keys()
        there = key_on(b, ["a", "b"])
        assert await a.ask(("counter", there), Add(2)) == 2
        assert await a.ask(("counter", there), Add(3)) == 5
        assert b.resident == 1 and a.resident == 0  # the actor runs on b only
        with pytest.raises(TooBig) as refused:
            await a.ask(("counter", there), Add(5000))
        assert refused.value.limit == 1000
        assert a.remote and a.remote.forwarded == 3
        assert b.remote and b.remote.received == 3


async def test_a_write_from_a_node_whose_shard_was_taken_is_fenced(redis_url: str) -> None:
    # no heartbeat during the test: a keeps believing it holds the shard, as a paused
    # node does until it looks again
    async with node(redis_url, "a", heartbeat=600) as a:
        await ready(a)
        assert a.placement
        assert await a.ask(("counter", "k"), Add(1)) == 1
        shard = a.placement.shard(("counter", "k"))
        # another node takes the shard while a does not look (as after a pause past the
        # lease): its epoch moves on
        async with RedisStore(redis_url, prefix="t:") as other:
            await other._live().delete([other.shard_key(shard, "lease")])
            assert await ShardStore(other, "z").acquire(shard, 60_000) > 0
            with pytest.raises(Fenced):
                batch = Batch()
                batch.put("counter:k", b"stale")
                batch.fence = a.placement.token(("counter", "k"))
                await other.commit(batch)
        before = a.placement.fenced
        with pytest.raises(Exception):  # noqa: B017 (the ask fails one way or another)
            await a.ask(("counter", "k"), Add(1), timeout=1.0)
        assert a.placement.fenced == before + 1
        assert shard not in a.placement.owned  # a gave the shard up
        async with RedisStore(redis_url, prefix="t:") as other:
            assert msgspec.json.decode(await other.get("counter:k") or b"", type=Tally).count == 1


async def test_a_service_whose_write_is_fenced_ends_quietly_and_waits_for_its_shard(
    redis_url: str,
) -> None:
    """`Engine.while_owned`: a service that writes after another node took its shard
    (unseen, as after a pause) is refused, ends, and is not failed nor run again here."""
    service_address = ("service", "s")
    go, rounds = trio.Event(), []

    async def service(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        rounds.append(1)
        task_status.started()
        await go.wait()
        batch = Batch()
        batch.put("service:last", b"late")
        await a.commit(batch)
        await trio.sleep_forever()

    async with node(redis_url, "a", heartbeat=600) as a, trio.open_nursery() as nursery:
        await ready(a)
        assert a.placement
        shard = a.placement.shard(service_address)
        nursery.start_soon(a.while_owned, service_address, service, 0.05)
        await trio.sleep(0.2)
        assert rounds == [1]
        async with RedisStore(redis_url, prefix="t:") as other:
            await other._live().delete([other.shard_key(shard, "lease")])
            assert await ShardStore(other, "z").acquire(shard, 60_000) > 0
            go.set()
            await trio.sleep(0.5)  # refused, the shard dropped, the loop waiting again
            assert shard not in a.placement.owned
            assert await other.get("service:last") is None
        assert rounds == [1]
        nursery.cancel_scope.cancel()


async def test_a_leaving_node_hands_its_shards_and_state_over(redis_url: str) -> None:
    async with node(redis_url, "a") as a:
        async with node(redis_url, "b") as b:
            await ready(a, b)
            there = key_on(b, ["a", "b"])
            assert await a.ask(("counter", there), Add(7)) == 7
        with trio.fail_after(5):
            await ready(a)
        assert a.placement and len(a.placement.owned) == SHARDS
        assert await a.ask(("counter", there), Add(1)) == 8


async def test_a_joining_node_takes_its_shards_after_the_old_owner_passivates(
    redis_url: str,
) -> None:
    async with node(redis_url, "a") as a:
        await ready(a)
        assert a.placement
        keys = [f"j{i}" for i in range(20)]
        for k in keys:
            await a.ask(("counter", k), Add(1))
        async with node(redis_url, "b") as b:
            await ready(a, b)
            assert b.placement and b.placement.owned
            for k in keys:
                assert await a.ask(("counter", k), Add(1)) == 2
            moved = [k for k in keys if b.placement.owns(("counter", k))]
            assert moved and b.resident == len(moved)


async def test_a_durable_timer_fires_once_on_its_shards_owner(redis_url: str) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(redis_url, "a"))
        b = await stack.enter_async_context(node(redis_url, "b"))
        await ready(a, b)
        there = key_on(b, ["a", "b"])
        await a.ask(("counter", there), Arm(a.clock.now() + 0.3))
        await trio.sleep(1.0)
        assert await a.store.log_length(f"dings:{there}") == 1
        assert await a.store.due_timers(a.clock.now() + 10, 10) == []


async def test_events_committed_on_one_node_are_published_on_every_node(redis_url: str) -> None:
    async with node(redis_url, "a") as a, node(redis_url, "b") as b:
        await ready(a, b)
        batch = Batch()
        batch.event(b"from-b")
        await b.commit(batch)
        with trio.fail_after(5):
            async for seq, payload in a.events.subscribe(0):
                assert (seq, payload) == (1, b"from-b")
                break


async def test_an_ask_handed_on_with_forward_is_answered_to_the_asker_on_another_node(
    redis_url: str,
) -> None:
    async with node(redis_url, "a") as a, node(redis_url, "b") as b:
        await ready(a, b)
        relay_on_a = key_on(a, ["a", "b"], "relay")
        counter_on_b = key_on(b, ["a", "b"])
        # b asks a relay on a, which hands the ask on to a counter back on b
        assert await b.ask(("relay", relay_on_a), Via(counter_on_b, 4)) == 4
        assert await a.ask(("relay", relay_on_a), Via(counter_on_b, 1)) == 5
        assert a.remote and a.remote.received == 1 and a.remote.forwarded == 2  # both on to b


async def test_a_notice_reaches_every_other_node_once(redis_url: str) -> None:
    async with node(redis_url, "a") as a, node(redis_url, "b") as b, node(redis_url, "c") as c:
        await ready(a, b, c)
        heard: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}
        for name, engine in (("a", a), ("b", b), ("c", c)):
            assert engine.remote
            engine.remote.listeners["chat"] = heard[name].append
        assert a.remote
        a.remote.notify("chat", b"frame")
        for _ in range(100):  # the nodes read the notices within milliseconds
            if heard["b"] and heard["c"]:
                break
            await trio.sleep(0.02)
        await trio.sleep(0.2)  # and nothing more arrives
        assert heard == {"a": [], "b": [b"frame"], "c": [b"frame"]}  # not to its sender
