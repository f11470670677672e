"""Actors: addressing, handlers by type, turns, order, back-pressure, ask, activation."""

from __future__ import annotations

import msgspec
import pytest
import trio
import trio.testing

from tidings.engine import (
    DEAD_LETTERS,
    Actor,
    AskTimeout,
    Batch,
    DeadLettered,
    EngineStopped,
    Forward,
    MailboxFull,
    Request,
    UnknownActorKind,
    handler,
    open_engine,
)
from tidings.engine.store.memory import MemoryStore


class Add(Request[int]):
    n: int


class Get(Request["Counter"]):
    pass


class Slow(Request[None]):
    seconds: float


class Unhandled(Request[None]):
    pass


class Counter(msgspec.Struct):
    total: int = 0
    seen: list[int] = []


class CounterActor(Actor):
    """Sums what it is told; its state is saved on every change and loaded on activation."""

    kind = "counter"
    __slots__ = ("state", "busy")
    activations = 0

    async def on_activate(self) -> None:
        type(self).activations += 1
        raw = await self.ctx.store.get(f"counter:{self.key}")
        self.state = msgspec.msgpack.decode(raw, type=Counter) if raw else Counter()
        self.busy = False

    @handler
    async def add(self, msg: Add) -> int:
        assert not self.busy, "two turns at once"
        self.busy = True
        await trio.lowlevel.checkpoint()
        self.state.total += msg.n
        self.state.seen.append(msg.n)
        batch = Batch()
        batch.put(f"counter:{self.key}", msgspec.msgpack.encode(self.state))
        await self.ctx.commit(batch)
        self.busy = False
        return self.state.total

    @handler
    async def get(self, msg: Get) -> Counter:
        return self.state

    @handler
    async def slow(self, msg: Slow) -> None:
        await trio.sleep(msg.seconds)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_tell_and_ask_reach_the_actor_by_kind_and_key(clock: trio.testing.MockClock) -> None:
    async with open_engine(MemoryStore(), [CounterActor]) as engine:
        engine.tell_nowait(("counter", "a"), Add(2))
        await engine.tell(("counter", "a"), Add(3))
        await engine.tell(("counter", "b"), Add(10))
        assert await engine.ask(("counter", "a"), Get()) == Counter(5, [2, 3])
        assert (await engine.ask(("counter", "b"), Get())).total == 10


async def test_messages_from_one_sender_keep_their_order_and_turns_never_overlap(
    clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [CounterActor], workers=8) as engine:
        for i in range(500):
            engine.tell_nowait(("counter", "x"), Add(i))
        state = await engine.ask(("counter", "x"), Get())
        assert state.seen == list(range(500))


async def test_many_senders_each_keep_order(clock: trio.testing.MockClock) -> None:
    async with open_engine(MemoryStore(), [CounterActor], workers=8) as engine:

        async def sender(base: int) -> None:
            for i in range(50):
                await engine.tell(("counter", "x"), Add(base + i))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for s in range(10):
                nursery.start_soon(sender, s * 1000)
        seen = (await engine.ask(("counter", "x"), Get())).seen
        for s in range(10):
            mine = [n for n in seen if s * 1000 <= n < s * 1000 + 1000]
            assert mine == [s * 1000 + i for i in range(50)]


async def test_tell_nowait_raises_mailbox_full_and_tell_waits_for_room(
    clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [CounterActor], mailbox_size=3) as engine:
        address = ("counter", "m")
        engine.tell_nowait(address, Slow(10))
        await trio.sleep(1)  # the slow message is being handled; the mailbox is empty
        for i in range(3):
            engine.tell_nowait(address, Add(i))
        with pytest.raises(MailboxFull, match="counter:m"):
            engine.tell_nowait(address, Add(99))
        start = trio.current_time()
        await engine.tell(address, Add(3))  # waits until the slow turn ends
        assert trio.current_time() - start >= 8
        assert (await engine.ask(address, Get())).seen == [0, 1, 2, 3]


async def test_ask_past_its_deadline_raises_ask_timeout(clock: trio.testing.MockClock) -> None:
    async with open_engine(MemoryStore(), [CounterActor]) as engine:
        with pytest.raises(AskTimeout, match="did not reply within 2 s"):
            await engine.ask(("counter", "t"), Slow(60), timeout=2)


async def test_ask_after_shutdown_raises_engine_stopped(clock: trio.testing.MockClock) -> None:
    async with open_engine(MemoryStore(), [CounterActor]) as engine:
        pass
    with pytest.raises(EngineStopped):
        await engine.ask(("counter", "z"), Get())
    with pytest.raises(EngineStopped):
        engine.tell_nowait(("counter", "z"), Get())


async def test_unknown_kind_is_a_clear_error(clock: trio.testing.MockClock) -> None:
    async with open_engine(MemoryStore(), [CounterActor]) as engine:
        with pytest.raises(UnknownActorKind, match="'nope'"):
            engine.tell_nowait(("nope", "1"), Get())


async def test_message_without_handler_goes_to_dead_letters(clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    async with open_engine(store, [CounterActor]) as engine:
        engine.tell_nowait(("counter", "d"), Unhandled())
        with pytest.raises(DeadLettered, match="no handler for Unhandled"):
            await engine.ask(("counter", "d"), Unhandled())
        # the actor still works
        assert await engine.ask(("counter", "d"), Add(1)) == 1
        letters = await store.log_tail(DEAD_LETTERS, 10)
        assert len(letters) == 2
        assert b"no handler for Unhandled" in letters[0]
        assert engine.dead_letters == 2


async def test_actor_is_activated_with_stored_state_and_passivated_when_idle(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    CounterActor.activations = 0
    async with open_engine(store, [CounterActor], idle_timeout=120) as engine:
        await engine.ask(("counter", "p"), Add(7))
        assert engine.resident == 1
        await trio.sleep(60)
        assert engine.resident == 1  # not idle long enough
        await trio.sleep(120)
        assert engine.resident == 0  # passivated: no memory kept
        assert await engine.ask(("counter", "p"), Add(1)) == 8  # state came back from the store
        assert CounterActor.activations == 2


async def test_failed_store_write_is_seen_by_the_sender(clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    # the dead-letter writer fails too and is restarted while the engine shuts down:
    # that restart must not hang the shutdown (it did, 1 run in 3, before the fix)
    with trio.fail_after(3600):
        await _failed_write(store)


async def _failed_write(store: MemoryStore) -> None:
    async with open_engine(store, [CounterActor], max_retries=1) as engine:
        store.fail_writes = True
        with pytest.raises(DeadLettered, match="write refused"):
            await engine.ask(("counter", "f"), Add(1))
        store.fail_writes = False
        assert await engine.ask(("counter", "f"), Get()) == Counter()


class Relay(Request[int]):
    to: str


class RelayActor(Actor):
    """Asks another actor while handling a message (as visitors ask tickets)."""

    kind = "relay"
    __slots__ = ()

    @handler
    async def relay(self, msg: Relay) -> int:
        return await self.ctx.ask(("counter", msg.to), Add(1))


async def test_handlers_that_ask_other_actors_never_starve_the_worker_pool(
    clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [CounterActor, RelayActor], workers=2) as engine:
        results: list[int] = []

        async def one(i: int) -> None:
            results.append(await engine.ask(("relay", str(i)), Relay(str(i)), timeout=5))

        async with trio.open_nursery() as nursery:
            for i in range(50):  # 50 askers holding workers, each waiting on another actor
                nursery.start_soon(one, i)
        assert results == [1] * 50
        await trio.sleep(10)
        assert engine._worker_count == 2  # the extra workers left once the rush was over


class Pass(Request[int]):
    to: str
    n: int


class ForwarderActor(Actor):
    """Hands `Add` on to a counter without waiting for it."""

    kind = "forwarder"
    __slots__ = ()

    @handler
    async def pass_on(self, msg: Pass) -> Forward:
        return Forward(("counter", msg.to), Add(msg.n))


async def test_forward_hands_the_message_on_and_the_last_actor_answers_the_asker(
    clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [CounterActor, ForwarderActor], workers=1) as engine:
        assert await engine.ask(("forwarder", "f"), Pass("c", 5)) == 5  # the counter's answer
        engine.tell_nowait(("forwarder", "f"), Pass("c", 2))  # a tell is forwarded as a tell
        # forwarded in order: Add(2) reaches the counter before this Add(0)
        assert await engine.ask(("forwarder", "f"), Pass("c", 0)) == 7
        assert (await engine.ask(("counter", "c"), Get())).seen == [5, 2, 0]


async def test_answered_asks_do_not_pile_up_until_their_deadlines(
    clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [CounterActor], deadline_compaction=50) as engine:
        for _ in range(500):
            await engine.ask(("counter", "d"), Get(), timeout=3600)
        assert len(engine.asks._heap) <= 100
        with pytest.raises(AskTimeout):  # deadlines still work after compaction
            await engine.ask(("counter", "t"), Slow(60), timeout=1)
