"""The timer service: keyed volatile timers (debounce), durable timers that survive
passivation and restarts, fire once, and are paged in by due time."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from tidings.engine import (
    DEAD_LETTERS,
    Actor,
    Batch,
    EngineError,
    Request,
    TrioWallClock,
    handler,
    open_engine,
)
from tidings.engine.store import open_store
from tidings.engine.store.memory import MemoryStore

START = 1_800_000_000.0  # a fixed wall-clock start for every test


class Ring(msgspec.Struct, tag="test.ring"):
    label: str


class Arm(Request[None]):
    key: str
    due: float
    label: str


class Disarm(Request[None]):
    key: str


class BellActor(Actor):
    """Records when each ring arrives (wall time) in the store; arms durable timers."""

    kind = "bell"
    __slots__ = ()

    @handler
    async def ring(self, msg: Ring) -> None:
        batch = Batch()
        batch.append(f"rings:{self.key}", f"{msg.label}@{self.ctx.clock.now():.3f}".encode())
        await self.ctx.commit(batch)

    @handler
    async def arm(self, msg: Arm) -> None:
        batch = Batch()
        self.ctx.timers.set_durable(batch, msg.key, msg.due, self.address, Ring(msg.label))
        await self.ctx.commit(batch)

    @handler
    async def disarm(self, msg: Disarm) -> None:
        batch = Batch()
        self.ctx.timers.cancel_durable(batch, msg.key)
        await self.ctx.commit(batch)


async def rings(store: MemoryStore, key: str = "b") -> list[str]:
    return [r.decode() for r in await store.log_tail(f"rings:{key}", 1000)]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def slow_jump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_volatile_timer_fires_after_its_delay(clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        engine.timers.after("t1", 30, ("bell", "b"), Ring("a"))
        await trio.sleep(29)
        assert await rings(store) == []
        await trio.sleep(2)
        assert await rings(store) == [f"a@{START + 30:.3f}"]


async def test_setting_a_key_again_replaces_its_timer_which_is_a_debounce(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        for i in range(5):  # a burst: each one moves the timer
            engine.timers.after("debounce", 180, ("bell", "b"), Ring(f"r{i}"))
            await trio.sleep(60)
        await trio.sleep(200)
        assert await rings(store) == [f"r4@{START + 240 + 180:.3f}"]


async def test_cancelled_timer_never_fires(clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        engine.timers.after("c", 10, ("bell", "b"), Ring("x"))
        engine.timers.cancel("c")
        await trio.sleep(20)
        assert await rings(store) == []
        assert engine.timers.pending == 0


async def test_durable_timer_survives_passivation(clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    async with open_engine(
        store, [BellActor], clock=TrioWallClock(START), idle_timeout=60
    ) as engine:
        await engine.ask(("bell", "b"), Arm("k", START + 3600, "wake"))
        await trio.sleep(600)
        assert engine.resident == 0  # passivated long before the timer is due
        await trio.sleep(3100)
        assert await rings(store) == [f"wake@{START + 3600:.3f}"]
        assert await store.next_timer_due() is None  # deleted once handled


async def test_durable_timer_survives_a_restart_and_fires_once(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        await engine.ask(("bell", "b"), Arm("snooze", START + 7200, "up"))
        await trio.sleep(100)
    # a new engine on the same store, as after a restart of the process
    async with open_engine(store, [BellActor], clock=TrioWallClock(START + 100)):
        await trio.sleep(7200)
    async with open_engine(store, [BellActor], clock=TrioWallClock(START + 7300)):
        await trio.sleep(100)
    assert await rings(store) == [f"up@{START + 7200:.3f}"]


async def test_durable_timer_replaced_and_cancelled_by_key(clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        await engine.ask(("bell", "b"), Arm("k", START + 10, "first"))
        await engine.ask(("bell", "b"), Arm("k", START + 20, "second"))
        await engine.ask(("bell", "b"), Arm("gone", START + 15, "never"))
        await engine.ask(("bell", "b"), Disarm("gone"))
        await trio.sleep(30)
        assert await rings(store) == [f"second@{START + 20:.3f}"]


async def test_durable_timers_are_paged_in_by_due_time_not_all_at_start(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        for i in range(100):  # one a day for 100 days
            await engine.ask(("bell", "b"), Arm(f"d{i}", START + 86400 * (i + 1), f"day{i}"))
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        engine.timers.window = 3600
        await trio.sleep(1)
        assert engine.timers.pending == 0  # nothing due within the window is loaded
        await trio.sleep(86400 * 3)
        assert engine.timers.pending <= 1
        assert len(await rings(store)) == 3


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_durable_timer_fires_once_after_a_restart_on_a_real_store(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    slow_jump_clock: trio.testing.MockClock,
) -> None:
    # Real store I/O runs in threads or sockets, during which an autojumping mock clock
    # would leap past ask deadlines: jump only after 50 ms of real idleness, and keep
    # the engine's own periodic wake-ups few (long idle timeout, a wide timer window).
    options = {"idle_timeout": 1e6, "timer_window": 20_000.0}
    url = (
        f"sqlite:///{tmp_path / 'timers.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    store = await open_store(url)
    async with open_engine(store, [BellActor], clock=TrioWallClock(START), **options) as engine:  # type: ignore[arg-type]
        await engine.ask(("bell", "b"), Arm("snooze", START + 7200, "up"))
    await store.aclose()
    for offset in (100, 7300):  # a restart before the timer is due, one after it fired
        store = await open_store(url)
        async with open_engine(store, [BellActor], clock=TrioWallClock(START + offset), **options):  # type: ignore[arg-type]
            await trio.sleep(7200)
        fired = [r.decode() for r in await store.log_tail("rings:b", 10)]
        assert len(fired) == 1 and fired[0].startswith("up@")
        at = float(fired[0].split("@")[1])
        assert (
            START + 7200 <= at < START + 7200 + 60
        )  # on time (store I/O may let trio's mock clock jump)
        assert await store.next_timer_due() is None
        await store.aclose()


class Untagged(msgspec.Struct):
    label: str


class LegacyBell(Actor):
    """A bell whose durable timers carry a message without a tag."""

    kind = "legacy"
    __slots__ = ()

    @handler
    async def ring(self, msg: Untagged) -> None:
        pass


async def test_durable_timer_messages_need_a_stable_tag(clock: trio.testing.MockClock) -> None:
    async with open_engine(MemoryStore(), [LegacyBell], clock=TrioWallClock(START)) as engine:
        with pytest.raises(EngineError, match="needs a msgspec Struct tag"):
            engine.timers.set_durable(Batch(), "k", START + 60, ("legacy", "l"), Untagged("x"))


class RenamedRing(msgspec.Struct, tag="test.ring"):
    """`Ring` after a rename: the same tag, so stored timers still reach it."""

    label: str


class RenamedBell(Actor):
    kind = "bell"
    __slots__ = ()

    @handler
    async def ring(self, msg: RenamedRing) -> None:
        batch = Batch()
        batch.append("renamed", msg.label.encode())
        await self.ctx.commit(batch)


async def test_a_durable_timer_still_fires_after_its_message_class_is_renamed(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        await engine.ask(("bell", "b"), Arm("k", START + 3600, "kept"))
    async with open_engine(store, [RenamedBell], clock=TrioWallClock(START + 60)):
        await trio.sleep(3600)
    assert await store.log_tail("renamed", 10) == [b"kept"]
    assert await store.due_timers(START + 10 * 3600, 10) == []


async def test_an_undecodable_durable_timer_is_dead_lettered_once_and_removed(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    batch = Batch()
    batch.set_timer("garbage", START + 10, b"\xc1 not msgpack")
    batch.set_timer("unknown", START + 20, msgspec.msgpack.encode(("bell", "b", "gone", {})))
    await store.commit(batch)
    async with open_engine(store, [BellActor], clock=TrioWallClock(START)) as engine:
        await trio.sleep(600)  # many paging rounds
        letters = [msgspec.json.decode(raw) for raw in await store.log_tail(DEAD_LETTERS, 10)]
        assert sorted((d["key"], d["reason"].split(":")[0]) for d in letters) == [
            ("garbage", "undecodable timer"),
            ("unknown", "undecodable timer"),
        ]
        assert "'gone'" in letters[1]["reason"] or "'gone'" in letters[0]["reason"]
        assert engine.dead_letters == 2
        assert await store.due_timers(START + 10 * 3600, 10) == []
