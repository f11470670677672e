"""Scenario `actors`: tell throughput across many actors, and the memory of an idle actor.

Throughput: `N` actors that only count, `M` messages sent round-robin by one sender
(`tell_nowait`, with a trio checkpoint every 1,000 sends so senders and workers
interleave as they would in a server), timed from the first send until every actor has
counted its share. Before the clock starts every actor has had one message, so the
engine's actors are activated and the baselines' tasks and threads are running: the figure
is steady-state mail delivery, not start-up. Compared with

- raw trio: one task per actor reading its own `trio.open_memory_channel`, the sender
  calling `send_nowait` (buffers big enough that it never blocks),
- pykka: one `ThreadingActor` (one OS thread) per actor, the sender calling `tell`.

Memory: bytes per idle resident actor, from `tracemalloc` (traced bytes after `N` actors
have each handled one message and gone idle, minus before, over `N`), against a raw trio
task parked on its memory channel (the task, its coroutine frame and its channel pair).
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from tidings.bench.harness import Progress, Row, row, scenario
from tidings.engine import Actor, handler, open_engine
from tidings.engine.store.memory import MemoryStore

CHECKPOINT_EVERY = 1_000  # the sender yields to the scheduler this often
PYKKA_SIZES = (10_000, 5_000, 2_000, 1_000, 500)  # tried in turn until one starts
PYKKA_SMALL = 1_000  # pykka is also run at this size, where its threads cost less


class Tick(msgspec.Struct):
    """The message every actor counts."""


class Tally:
    """Counts actors that have received all the mail meant for them in a phase.

    Every actor knows how many messages it is due (`due(i)`); when its count reaches a
    target it `arrive`s, and the phase is over when all have. trio runs are single
    threaded; pykka's actor threads `arrive` under a lock.
    """

    def __init__(self, actors: int, messages: int) -> None:
        self.actors = actors
        self.messages = messages
        self.waiting = actors
        self.lock = threading.Lock()

    def due(self, i: int) -> int:
        """How many of the timed messages go to actor `i` (round-robin)."""
        return self.messages // self.actors + (1 if i < self.messages % self.actors else 0)


# -- engine ---------------------------------------------------------------------------


def counting_actor(tally: Tally, on_all: Callable[[], None]) -> type[Actor]:
    """An actor kind `count` that counts `Tick`s and arrives at 1 and at 1 + its share."""

    class CountingActor(Actor):
        kind = "count"
        __slots__ = ("count", "final")

        async def on_activate(self) -> None:
            self.count = 0
            self.final = 1 + tally.due(int(self.key))

        @handler
        async def tick(self, msg: Tick) -> None:
            self.count += 1
            if self.count == 1 or self.count == self.final:
                tally.waiting -= 1
                if tally.waiting == 0:
                    on_all()

    return CountingActor


async def _engine_tell(actors: int, messages: int) -> float:
    tally = Tally(actors, messages)
    phase = [trio.Event()]
    kind = counting_actor(tally, lambda: phase[0].set())
    async with open_engine(MemoryStore(), [kind]) as engine:
        addresses = [("count", str(i)) for i in range(actors)]
        msg = Tick()
        for address in addresses:  # warm up: activate every actor
            engine.tell_nowait(address, msg)
        await phase[0].wait()
        phase[0], tally.waiting = trio.Event(), actors
        started = time.perf_counter()
        tell = engine.tell_nowait
        for i in range(messages):
            tell(addresses[i % actors], msg)
            if i % CHECKPOINT_EVERY == 0:
                await trio.lowlevel.checkpoint()
        await phase[0].wait()
        return messages / (time.perf_counter() - started)


async def _raw_actor(
    rx: trio.MemoryReceiveChannel[Tick], final: int, tally: Tally, on_all: Callable[[], None]
) -> None:
    count = 0
    async for _ in rx:
        count += 1
        if count == 1 or count == final:
            tally.waiting -= 1
            if tally.waiting == 0:
                on_all()


async def _raw_tell(actors: int, messages: int) -> float:
    tally = Tally(actors, messages)
    phase = [trio.Event()]

    def on_all() -> None:
        phase[0].set()

    room = messages // actors + 2
    async with trio.open_nursery() as nursery:
        channels: list[trio.MemorySendChannel[Tick]] = []
        for i in range(actors):
            tx, rx = trio.open_memory_channel[Tick](room)
            channels.append(tx)
            nursery.start_soon(_raw_actor, rx, 1 + tally.due(i), tally, on_all)
        msg = Tick()
        for tx in channels:
            tx.send_nowait(msg)
        await phase[0].wait()
        phase[0], tally.waiting = trio.Event(), actors
        started = time.perf_counter()
        for i in range(messages):
            channels[i % actors].send_nowait(msg)
            if i % CHECKPOINT_EVERY == 0:
                await trio.lowlevel.checkpoint()
        await phase[0].wait()
        rate = messages / (time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return rate


# -- pykka ------------------------------------------------------------------------------


def _pykka() -> Any:
    try:
        import pykka
    except ImportError as exc:  # pragma: no cover - pykka is in the [bench] extra
        raise SystemExit(
            "the actors benchmark needs pykka for its baseline: pip install 'tidings[bench]'"
        ) from exc
    return pykka


class _Arrivals:
    """A thread-safe countdown for pykka actors, with an event per phase."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.warm = threading.Event()
        self.done = threading.Event()
        self.arrived = 0

    def arrive(self) -> None:
        with self.tally.lock:
            self.arrived += 1
            if self.arrived == self.tally.actors:
                self.warm.set()
            elif self.arrived == 2 * self.tally.actors:
                self.done.set()


def _pykka_tell(actors: int, messages: int) -> tuple[float, int]:
    """msgs/s of pykka with the most of `actors`, `PYKKA_SIZES` threads it can start."""
    pykka = _pykka()

    class PykkaCounter(pykka.ThreadingActor):  # type: ignore[misc, name-defined]
        def __init__(self, final: int, arrivals: _Arrivals) -> None:
            super().__init__()
            self.count = 0
            self.final = final
            self.arrivals = arrivals

        def on_receive(self, message: Any) -> None:
            self.count += 1
            if self.count == 1 or self.count == self.final:
                self.arrivals.arrive()

    sizes = [s for s in PYKKA_SIZES if s <= actors] or [actors]
    for size in sizes:
        tally = Tally(size, messages)
        arrivals = _Arrivals(tally)
        refs: list[Any] = []
        try:
            for i in range(size):
                refs.append(PykkaCounter.start(1 + tally.due(i), arrivals))
        except (RuntimeError, MemoryError):  # can't start new thread
            pykka.ActorRegistry.stop_all()
            continue
        try:
            msg = Tick()
            for ref in refs:
                ref.tell(msg)
            arrivals.warm.wait()
            started = time.perf_counter()
            for i in range(messages):
                refs[i % size].tell(msg)
            arrivals.done.wait()
            return messages / (time.perf_counter() - started), size
        finally:
            pykka.ActorRegistry.stop_all()
    raise RuntimeError(f"pykka could not start even {PYKKA_SIZES[-1]} actor threads")


# -- memory -----------------------------------------------------------------------------


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _engine_idle_bytes(actors: int) -> float:
    tally = Tally(actors, 0)
    done = trio.Event()
    kind = counting_actor(tally, done.set)
    async with open_engine(MemoryStore(), [kind]) as engine:
        await trio.lowlevel.checkpoint()
        before = _traced()
        msg = Tick()
        for i in range(actors):
            engine.tell_nowait(("count", str(i)), msg)
            if i % CHECKPOINT_EVERY == 0:
                await trio.lowlevel.checkpoint()
        await done.wait()
        await trio.sleep(0.01)  # let the last turns finish
        assert engine.resident == actors
        return (_traced() - before) / actors


async def _raw_idle_bytes(actors: int) -> float:
    tally = Tally(actors, 0)
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        await trio.lowlevel.checkpoint()
        before = _traced()
        channels: list[trio.MemorySendChannel[Tick]] = []
        msg = Tick()
        for i in range(actors):
            tx, rx = trio.open_memory_channel[Tick](16)
            channels.append(tx)
            nursery.start_soon(_raw_actor, rx, 1, tally, done.set)
            tx.send_nowait(msg)
            if i % CHECKPOINT_EVERY == 0:
                await trio.lowlevel.checkpoint()
        await done.wait()
        await trio.sleep(0.01)
        per_actor = (_traced() - before) / actors
        nursery.cancel_scope.cancel()
    return per_actor


def _with_tracemalloc(fn: Callable[[int], Any], n: int) -> float:
    tracemalloc.start()
    try:
        return float(trio.run(fn, n))
    finally:
        tracemalloc.stop()


# -- the scenario --------------------------------------------------------------------------


@scenario("actors", repeats=5, quick_repeats=1)
def actors(quick: bool, progress: Progress) -> list[Row]:
    """Tell throughput (engine vs raw trio tasks vs pykka threads) and idle actor memory."""
    n_actors, n_msgs = (1_000, 20_000) if quick else (10_000, 200_000)
    n_idle = 10_000 if quick else 100_000
    first = progress.repetition == 0
    tell = f"engine tell, {n_actors:,} actors, {n_msgs:,} msgs"
    idle = f"engine idle resident actor ({n_idle:,})"
    rows: list[Row] = []

    progress(0.0, "engine tell")
    rows.append(row(tell, trio.run(_engine_tell, n_actors, n_msgs), "msgs/s"))
    progress(0.05, "raw trio tell")
    raw_rate = trio.run(_raw_tell, n_actors, n_msgs)
    rows.append(
        row(f"raw trio, {n_actors:,} tasks + memory channels", raw_rate, "msgs/s", baseline_of=tell)
    )
    if first or n_actors <= PYKKA_SMALL:
        # With one OS thread per actor, pykka at full size is slow enough (about a
        # minute for 200,000 messages on 2 cores) that it runs in the first repetition only.
        progress(0.1, f"pykka tell, {n_actors:,} threads")
        rate, size = _pykka_tell(n_actors, n_msgs)
        note = None
        if size < n_actors:
            note = f"pykka could not start {n_actors:,} threads; ran {size:,} actors, same messages"
        elif not quick:
            note = "one OS thread per actor; measured in the first run only (slow)"
        rows.append(
            row(f"pykka, {size:,} ThreadingActors", rate, "msgs/s", baseline_of=tell, note=note)
        )
    if n_actors > PYKKA_SMALL:
        progress(0.45, f"pykka tell, {PYKKA_SMALL:,} threads")
        rate, size = _pykka_tell(PYKKA_SMALL, n_msgs)
        rows.append(
            row(
                f"pykka, {size:,} ThreadingActors (same {n_msgs:,} msgs)",
                rate,
                "msgs/s",
                baseline_of=tell,
                note="fewer threads, the workload pykka is best at; for scale",
            )
        )
    if first:  # tracemalloc figures are the same run after run
        progress(0.5, "engine idle memory")
        rows.append(
            row(idle, _with_tracemalloc(_engine_idle_bytes, n_idle), "bytes/actor", better="lower")
        )
        progress(0.6, "raw trio idle memory")
        raw_bytes = _with_tracemalloc(_raw_idle_bytes, n_idle)
        rows.append(
            row(
                f"raw trio task parked on a memory channel ({n_idle:,})",
                raw_bytes,
                "bytes/actor",
                baseline_of=idle,
                better="lower",
            )
        )
    progress(1.0, "done")
    return rows
