"""Retention (contract v3, "Limits and bad input"): live-only events take no number,
old events are dropped with `oldest` reported, keys with an expiry are forgotten when
due, and the dead-letter log keeps the newest 10,000 — on every store, time from
trio's MockClock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from tests.engine.speaker import Say, Shout, Speaker
from tidings.engine import (
    DEAD_LETTERS,
    Batch,
    Engine,
    TrioWallClock,
    expire_at,
    open_engine,
)
from tidings.engine.retention import MARKS
from tidings.engine.store import Store
from tidings.engine.store.memory import MemoryStore
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.sqlite import SqliteStore

DAY = 86400.0
START = 1_800_000_000.0


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def slow_jump_clock() -> trio.testing.MockClock:
    """Store I/O runs in threads: jump the mock clock only after 50 ms of real idleness."""
    return trio.testing.MockClock(autojump_threshold=0.05)


# Store I/O in threads lets the mock clock jump past a sweep still writing, so the tests
# on every store sweep themselves; the service's own schedule is tested on memory.
NO_SCHEDULE = 1e9
# and the engine's other services wake rarely, so that the clock jumps a day in few steps
QUIET = {"idle_timeout": 1e6, "timer_window": 1e6}


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "memory":
        opened = MemoryStore()
    elif request.param == "sqlite":
        opened = await SqliteStore(tmp_path / "store.db").open()
    else:
        opened = await RedisStore(request.getfixturevalue("redis_url"), prefix="t:").open()
    try:
        yield opened
    finally:
        await opened.aclose()


async def collect(engine: Engine, since: int, n: int) -> list[tuple[int | None, bytes]]:
    got: list[tuple[int | None, bytes]] = []
    async for item in engine.events.subscribe(since):
        got.append(item)
        if len(got) == n:
            break
    return got


async def say(engine: Engine, *texts: str) -> None:
    """Commit one event per text (through the one commit path, with no ask deadline)."""
    for text in texts:
        batch = Batch()
        batch.event(text.encode())
        await engine.commit(batch)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(10_000):
        if await check():
            return
        await trio.sleep(0.01)
    raise AssertionError("never happened")


# -- live-only events ---------------------------------------------------------------------


async def test_live_only_events_reach_connected_subscribers_with_no_seq_and_are_not_stored(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [Speaker]) as engine:
        await say(engine, "e1")
        engine.tell_nowait(("speaker", "a"), Shout("nobody listens"))  # before anyone subscribed
        await trio.sleep(1)
        received: list[tuple[int | None, bytes]] = []

        async def listen() -> None:
            received.extend(await collect(engine, 0, 4))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await trio.sleep(1)
            engine.tell_nowait(("speaker", "a"), Shout("typing"))
            await trio.sleep(1)
            await say(engine, "e2")
            engine.tell_nowait(("speaker", "a"), Shout("typing again"))
        assert received == [(1, b"e1"), (None, b"typing"), (2, b"e2"), (None, b"typing again")]
        # no number taken, nothing stored: the stored log stays 1, 2 and replays without them
        assert engine.events.last_seq == 2
        assert await store.events_since(0, 10) == [(1, b"e1"), (2, b"e2")]
        await say(engine, "e3")
        assert await collect(engine, 0, 3) == [(1, b"e1"), (2, b"e2"), (3, b"e3")]


# -- event retention ----------------------------------------------------------------------


async def test_events_older_than_kept_are_dropped_and_oldest_reported(
    slow_jump_clock: trio.testing.MockClock, store: Store
) -> None:
    options = {
        "clock": TrioWallClock(START), "events_kept_s": DAY, "retention_every": NO_SCHEDULE,
        **QUIET,
    }  # fmt: skip
    async with open_engine(store, [Speaker], **options) as engine:
        sweep = engine.retention.sweep
        await say(engine, "day0-a", "day0-b")
        await sweep()
        assert engine.events.oldest == 1
        await trio.sleep(DAY / 2)
        await say(engine, "day0.5")
        await sweep()
        await trio.sleep(DAY / 2 - 1)
        await sweep()
        assert engine.events.oldest == 1  # not yet a day old: kept
        await trio.sleep(2)
        await sweep()
        assert engine.events.oldest == 3  # the first two are a day old: dropped
        assert await store.first_event_seq() == 3
        assert await store.events_since(0, 10) == [(3, b"day0.5")]
        # a subscriber from before oldest gets a replay from oldest on, without a hang
        await say(engine, "day1")
        assert await collect(engine, 0, 2) == [(3, b"day0.5"), (4, b"day1")]
    async with open_engine(store, [Speaker], **options) as engine:  # a restart knows it
        assert engine.events.oldest == 3
        assert engine.events.last_seq == 4
        await trio.sleep(DAY + 1)
        await engine.retention.sweep()
        assert engine.events.oldest == 5  # every event older than a day is gone
        await say(engine, "day2")
        assert engine.events.last_seq == 5  # numbering goes on, gap-free above oldest
        assert await collect(engine, 2, 1) == [(5, b"day2")]
    marks = msgspec.json.decode(await store.get(MARKS) or b"[]")
    assert all(at > START + DAY for at, _ in marks)  # the marks are bounded too


@asynccontextmanager
async def marked_old_event() -> AsyncIterator[tuple[MemoryStore, Engine]]:
    """An engine sweeping hourly, keeping events a day, whose event 1 ("old") the first
    hourly sweep has marked."""
    store = MemoryStore()
    options = {"clock": TrioWallClock(START), "events_kept_s": DAY, "retention_every": 3600.0}
    async with open_engine(store, [Speaker], **options) as engine:
        await say(engine, "old")
        await trio.sleep(3600 + 1)
        yield store, engine


async def test_the_retention_service_sweeps_on_its_own_every_hour(
    clock: trio.testing.MockClock,
) -> None:
    async with marked_old_event() as (store, engine):
        await say(engine, "new")
        await trio.sleep(DAY - 2)
        assert engine.events.oldest == 1
        await trio.sleep(2)  # the sweep a day after the one that marked "old"
        assert engine.events.oldest == 2
        assert await store.events_since(0, 10) == [(2, b"new")]
        await trio.sleep(3600)  # and the one a day after "new" was marked
        assert engine.events.oldest == 3
        assert await store.events_since(0, 10) == []


async def test_a_sweep_the_store_refuses_is_tried_again_an_hour_later(
    clock: trio.testing.MockClock,
) -> None:
    async with marked_old_event() as (store, engine):
        store.fail_writes = True
        await trio.sleep(DAY + 3600)  # every sweep since failed; the engine runs on
        assert engine.events.oldest == 1
        store.fail_writes = False
        await trio.sleep(3600)
        assert engine.events.oldest == 2


# -- keys with an expiry ------------------------------------------------------------------


async def test_a_key_with_an_expiry_is_kept_until_then_and_deleted_after(
    slow_jump_clock: trio.testing.MockClock, store: Store
) -> None:
    options = {"clock": TrioWallClock(START), "retention_every": NO_SCHEDULE, **QUIET}
    keys = ["idem:0", "idem:1", "idem:2"]
    async with open_engine(store, [Speaker], **options) as engine:
        batch = Batch()
        for i, key in enumerate(keys):
            batch.put(key, b"seen")
            expire_at(batch, key, START + (i + 1) * DAY)
        await engine.commit(batch)
        await trio.sleep(DAY - 60)
        await engine.retention.sweep()
        assert await store.get_many(keys) == [b"seen"] * 3
        await trio.sleep(120)
        await engine.retention.sweep()
        assert await store.get_many(keys) == [None, b"seen", b"seen"]
        await trio.sleep(2 * DAY)
        await engine.retention.sweep()
        assert await store.get_many(keys) == [None, None, None]
        assert await store.index_count("expiring", frozenset()) == 0


# -- dead letters -------------------------------------------------------------------------


async def test_dead_letters_keep_newest_10000(
    slow_jump_clock: trio.testing.MockClock, store: Store
) -> None:
    async with open_engine(store, [Speaker]) as engine:
        for i in range(10_050):
            engine.letters.add(("speaker", "a"), Say(f"letter {i}"), "test")

        async def written() -> bool:
            return engine.dead_letters == 10_050 and await store.log_length(DEAD_LETTERS) == 10_000

        await eventually(written)
        letters = [msgspec.json.decode(r) for r in await store.log_tail(DEAD_LETTERS, 20_000)]
        assert len(letters) == 10_000
        assert letters[0]["message"] == '{"text":"letter 50"}'  # the oldest 50 are gone
        assert letters[-1]["message"] == '{"text":"letter 10049"}'
