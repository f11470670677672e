"""The event log: gap-free sequence numbers, replay from a number, then live events."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.engine.speaker import Say, Speaker
from tidings.engine import Batch, open_engine
from tidings.engine.store.memory import MemoryStore


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def collect(engine, since: int, n: int) -> list[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
    got: list[tuple[int, bytes]] = []
    async for item in engine.events.subscribe(since):
        got.append(item)
        if len(got) == n:
            break
    return got


async def test_subscriber_gets_stored_events_then_live_ones_without_gaps(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [Speaker]) as engine:
        for i in range(5):
            await engine.ask(("speaker", str(i % 3)), Say(f"e{i + 1}"))
        received: list[tuple[int, bytes]] = []

        async def listen() -> None:
            received.extend(await collect(engine, 2, 8))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await trio.sleep(1)
            for i in range(5, 10):
                engine.tell_nowait(("speaker", str(i % 4)), Say(f"e{i + 1}"))
        assert [s for s, _ in received] == list(range(3, 11))
        said = [p.decode() for _, p in received]
        assert said[:3] == ["e3", "e4", "e5"]  # stored before the subscriber came, in order
        # the live ones in commit order: speakers run side by side (speaker 1 may say e6
        # and e10 in one turn, before speaker 2 says e7), each one in the order it was told
        assert sorted(said[3:], key=lambda e: int(e[1:])) == [f"e{i}" for i in range(6, 11)]
        assert said.index("e6") < said.index("e10")


async def test_a_restarted_engine_replays_from_the_store(clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    async with open_engine(store, [Speaker]) as engine:
        for i in range(3):
            await engine.ask(("speaker", "a"), Say(f"old{i}"))
    async with open_engine(store, [Speaker]) as engine:
        assert engine.events.last_seq == 3
        await engine.ask(("speaker", "a"), Say("new"))
        got = await collect(engine, 1, 3)
        assert got == [(2, b"old1"), (3, b"old2"), (4, b"new")]


async def test_an_event_committed_but_never_announced_is_read_from_the_store(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [Speaker]) as engine:
        batch = Batch()
        batch.event(b"silent")
        await store.commit(batch)  # seq 1, bypassing Engine.commit's announcement
        await engine.ask(("speaker", "a"), Say("loud"))  # seq 2
        got = await collect(engine, 0, 2)
        assert got == [(1, b"silent"), (2, b"loud")]
