"""Scenario `timers`: memory of pending timers, durable timer writes and paging, firing lag.

- Volatile timers: `N` pending `engine.timers.after(...)` timers (each with its own key
  and its own small message, to one of 1,000 actors, due in an hour), bytes per timer from
  `tracemalloc`; baseline: a trio task sleeping until its due time (one task per timer).
- Durable timers: `N` written to a `MemoryStore` with `set_durable`, in batches of 1,000
  committed through `engine.commit`, due over the hour after the next two minutes;
  baseline: the same timers as pre-encoded `Batch.set_timer` rows committed straight to
  the store (what the engine adds is the type check and msgpack encoding). Then a fresh
  engine starts on that store as if 110 s later, so that its paging window (60 s) reaches
  into the written timers: its start-up time and how many timers it holds in memory
  (`engine.timers.pending`, at most one page of 10,000 however many are stored).
- Firing lag on the real clock: `L` volatile timers due over about `S` seconds, each
  recording `trio.current_time() - due` when its actor handles it (p50 and p99);
  baseline: one task per timer doing `trio.sleep_until(due)` on the same schedule.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from tidings.bench.harness import Progress, Row, row, scenario
from tidings.engine import Actor, Batch, handler, open_engine
from tidings.engine.store.memory import MemoryStore

ACTORS = 1_000  # timers are spread over this many actors
BATCH = 1_000  # durable timers per committed batch
RESTART_AHEAD = 110.0  # the restarted engine's clock runs this far ahead (seconds)
FIRST_DUE = 120.0  # durable timers are due from this far ahead ...
SPREAD = 3_600.0  # ... over this long
LEAD = 1.0  # lag runs set every timer (or start every task) before the first is due


class Wake(msgspec.Struct, tag="bench.wake", gc=False):
    """A timer's message: when it was due (trio time), so the actor can measure the lag.
    Untracked by the garbage collector, as the inbox's own timer messages are."""

    due: float


class ShiftedClock:
    """Wall time `ahead` seconds in the future: a restart that happens later."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def now(self) -> float:
        """Epoch seconds, shifted."""
        return time.time() + self.ahead


def alarm_actor(on_wake: Callable[[float], None]) -> type[Actor]:
    """An actor kind `alarm` that calls `on_wake(lag)` for each `Wake` it handles."""

    class AlarmActor(Actor):
        kind = "alarm"
        __slots__ = ()

        @handler
        async def wake(self, msg: Wake) -> None:
            on_wake(trio.current_time() - msg.due)

    return AlarmActor


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _with_tracemalloc(fn: Callable[[int], Awaitable[float]], n: int) -> float:
    tracemalloc.start()
    try:
        return float(trio.run(fn, n))
    finally:
        tracemalloc.stop()


def _addresses() -> list[tuple[str, str]]:
    return [("alarm", str(i)) for i in range(ACTORS)]


# -- memory of pending volatile timers -----------------------------------------------------


async def _volatile_bytes(n: int) -> float:
    async with open_engine(MemoryStore(), [alarm_actor(lambda lag: None)]) as engine:
        addresses = _addresses()
        await trio.lowlevel.checkpoint()
        before = _traced()
        after = engine.timers.after
        for i in range(n):
            after(f"t{i}", 3_600.0 + i * 1e-3, addresses[i % ACTORS], Wake(0.0))
        per_timer = (_traced() - before) / n
        assert engine.timers.pending == n
        return per_timer


async def _sleeper(due: float) -> None:
    await trio.sleep_until(due)


async def _sleeping_task_bytes(n: int) -> float:
    async with trio.open_nursery() as nursery:
        await trio.lowlevel.checkpoint()
        before = _traced()
        base = trio.current_time() + 3_600.0
        for i in range(n):
            nursery.start_soon(_sleeper, base + i * 1e-3)
            if i % 1_000 == 0:
                await trio.lowlevel.checkpoint()
        await trio.sleep(0.01)  # every task has started and is parked
        per_task = (_traced() - before) / n
        nursery.cancel_scope.cancel()
    return per_task


# -- durable timers ---------------------------------------------------------------------


async def _durable_writes(n: int, progress: Callable[[float], None]) -> tuple[float, MemoryStore]:
    """Write `n` durable timers through an engine; return timers/s and the store."""
    store = MemoryStore()
    async with open_engine(store, [alarm_actor(lambda lag: None)]) as engine:
        addresses = _addresses()
        first = engine.clock.now() + FIRST_DUE
        step = SPREAD / n
        set_durable = engine.timers.set_durable
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            batch = Batch()
            for i in range(start, min(start + BATCH, n)):
                set_durable(batch, f"d{i}", first + i * step, addresses[i % ACTORS], Wake(0.0))
            await engine.commit(batch)
            if start % (BATCH * 50) == 0:
                progress(start / n)
        rate = n / (time.perf_counter() - started)
        assert engine.timers.pending == 0  # all due beyond its window: none held
        return rate, store


async def _store_writes(n: int) -> float:
    """Baseline: the same timers, pre-encoded, committed straight to a `MemoryStore`."""
    store = MemoryStore()
    payload = msgspec.msgpack.encode(("alarm", "0", "alarm/Wake", Wake(0.0)))
    first = time.time() + FIRST_DUE
    step = SPREAD / n
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        batch = Batch()
        for i in range(start, min(start + BATCH, n)):
            batch.set_timer(f"d{i}", first + i * step, payload)
        await store.commit(batch)
    return n / (time.perf_counter() - started)


async def _restart(store: MemoryStore) -> tuple[float, int]:
    """Start an engine on `store` (clock `RESTART_AHEAD` later): start seconds, pending."""
    started = time.perf_counter()
    async with open_engine(
        store, [alarm_actor(lambda lag: None)], clock=ShiftedClock(RESTART_AHEAD)
    ) as engine:
        seconds = time.perf_counter() - started
        return seconds, engine.timers.pending


# -- firing lag ---------------------------------------------------------------------------


def _percentiles(lags: list[float]) -> tuple[float, float]:
    """p50 and p99 of `lags`, in milliseconds."""
    cuts = statistics.quantiles(lags, n=100, method="inclusive")
    return statistics.median(lags) * 1e3, cuts[98] * 1e3


async def _engine_lag(n: int, spread: float) -> tuple[float, float]:
    lags: list[float] = []
    done = trio.Event()

    def on_wake(lag: float) -> None:
        lags.append(lag)
        if len(lags) == n:
            done.set()

    async with open_engine(MemoryStore(), [alarm_actor(on_wake)]) as engine:
        addresses = _addresses()
        after = engine.timers.after
        base = trio.current_time() + LEAD
        for i in range(n):
            due = base + spread * i / n
            after(f"t{i}", due - trio.current_time(), addresses[i % ACTORS], Wake(due))
        await done.wait()
    return _percentiles(lags)


async def _sleep_lag(n: int, spread: float) -> tuple[float, float]:
    lags: list[float] = []

    async def sleeper(due: float) -> None:
        await trio.sleep_until(due)
        lags.append(trio.current_time() - due)

    async with trio.open_nursery() as nursery:
        base = trio.current_time() + LEAD
        for i in range(n):
            nursery.start_soon(sleeper, base + spread * i / n)
    return _percentiles(lags)


# -- the scenario --------------------------------------------------------------------------


def _run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args)


@scenario("timers", repeats=5, quick_repeats=1)
def timers(quick: bool, progress: Progress) -> list[Row]:
    """Pending timer memory, durable timer writes and paging, firing lag (engine vs trio)."""
    n_volatile = 50_000 if quick else 1_000_000
    n_tasks = 5_000 if quick else 20_000
    n_durable = 50_000 if quick else 1_000_000
    n_lag, spread = (5_000, 1.0) if quick else (20_000, 2.0)
    first = progress.repetition == 0
    rows: list[Row] = []

    if first:  # tracemalloc figures are the same run after run
        progress(0.0, "volatile timer memory")
        volatile = f"engine pending volatile timer ({n_volatile:,})"
        rows.append(
            row(
                volatile,
                _with_tracemalloc(_volatile_bytes, n_volatile),
                "bytes/timer",
                better="lower",
            )
        )
        progress(0.15, "sleeping task memory")
        rows.append(
            row(
                f"trio task sleeping until due ({n_tasks:,})",
                _with_tracemalloc(_sleeping_task_bytes, n_tasks),
                "bytes/timer",
                baseline_of=volatile,
                better="lower",
            )
        )

    progress(0.25, "durable timer writes")
    writes = f"engine durable timer writes ({n_durable:,}, batches of {BATCH:,})"
    rate, store = _run(
        _durable_writes, n_durable, lambda f: progress(0.25 + 0.3 * f, "durable timer writes")
    )
    rows.append(row(writes, rate, "timers/s"))
    progress(0.55, "store-only timer writes")
    rows.append(
        row(
            f"MemoryStore.commit of pre-encoded timers ({n_durable:,})",
            _run(_store_writes, n_durable),
            "timers/s",
            baseline_of=writes,
        )
    )
    progress(0.7, "restart over stored timers")
    start_seconds, pending = _run(_restart, store)
    del store
    rows.append(
        row(
            f"engine start over {n_durable:,} stored durable timers",
            start_seconds * 1e3,
            "ms",
            better="lower",
        )
    )
    rows.append(
        row(
            f"durable timers in memory after that start (of {n_durable:,})",
            pending,
            "timers",
            better="lower",
            note=(
                f"restart {RESTART_AHEAD:.0f} s after the writes: the 60 s window reaches "
                "the first stored timers; at most one page (10,000) is loaded"
            ),
        )
    )
    progress(0.75, "engine firing lag")
    lag_p50 = f"engine volatile timer lag p50 ({n_lag:,} over {spread:g} s)"
    lag_p99 = f"engine volatile timer lag p99 ({n_lag:,} over {spread:g} s)"
    p50, p99 = _run(_engine_lag, n_lag, spread)
    progress(0.87, "trio.sleep_until lag")
    b50, b99 = _run(_sleep_lag, n_lag, spread)
    rows += [
        row(lag_p50, p50, "ms", better="lower"),
        row(lag_p99, p99, "ms", better="lower"),
        row("trio.sleep_until task lag p50", b50, "ms", baseline_of=lag_p50, better="lower"),
        row("trio.sleep_until task lag p99", b99, "ms", baseline_of=lag_p99, better="lower"),
    ]
    progress(1.0, "done")
    return rows
