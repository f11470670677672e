"""Drains: messages of one type waiting in a row go to the actor's drain in one call, which
handles them in one commit and answers each; the rest go to the one-message handler."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from tidings.engine import Actor, Batch, DeadLettered, Refused, Request, handler, open_engine
from tidings.engine.store.memory import MemoryStore

POISON = 13  # a Put that crashes its handler and its drain


class Put(Request[int]):
    n: int


class Other(Request[str]):
    pass


class Hold(msgspec.Struct):
    """Keeps the ledger in its turn until `Ledger.gate` is set, so mail waits behind it."""


class Ledger(Actor):
    """Writes each Put at `ledger:<n>` and answers 2n; a negative n is refused."""

    kind = "ledger"
    __slots__ = ()
    calls: list[tuple[str, list[int]]] = []
    gate = trio.Event()
    take: int | None = None  # how many of a run its drain handles (None: all)

    async def _write(self, ns: list[int]) -> None:
        batch = Batch()
        for n in ns:
            batch.put(f"ledger:{n}", str(n).encode())
        await self.ctx.commit(batch)

    @handler
    async def hold(self, msg: Hold) -> None:
        await type(self).gate.wait()

    @handler
    async def other(self, msg: Other) -> str:
        type(self).calls.append(("other", []))
        return "other"

    @handler
    async def put(self, msg: Put) -> int:
        type(self).calls.append(("one", [msg.n]))
        if msg.n == POISON:
            raise ValueError("poison")
        if msg.n < 0:
            raise Refused("negative")
        await self._write([msg.n])
        return 2 * msg.n

    @handler
    async def put_run(self, msgs: list[Put]) -> list[int | Refused]:
        type(self).calls.append(("run", [m.n for m in msgs]))
        taken = msgs[: type(self).take]
        if any(m.n == POISON for m in taken):
            raise ValueError("poison")
        await self._write([m.n for m in taken if m.n >= 0])
        return [2 * m.n if m.n >= 0 else Refused("negative") for m in taken]


@pytest.fixture(autouse=True)
def fresh_ledger() -> None:
    Ledger.calls = []
    Ledger.gate = trio.Event()
    Ledger.take = None


async def _queue_behind_hold(engine: Any, msgs: list[Any]) -> list[Any]:
    """Send `msgs` as asks while the ledger holds its turn, then let it go; the answers
    (or errors) in order."""
    address = ("ledger", "a")
    answers: list[Any] = [None] * len(msgs)

    async def ask(i: int) -> None:
        try:
            answers[i] = await engine.ask(address, msgs[i])
        except Exception as exc:
            answers[i] = exc

    engine.tell_nowait(address, Hold())
    await trio.testing.wait_all_tasks_blocked()  # its turn started: the asks wait behind it
    async with trio.open_nursery() as nursery:
        for i in range(len(msgs)):
            nursery.start_soon(ask, i)
            await trio.testing.wait_all_tasks_blocked()  # posted in this order
        Ledger.gate.set()
    return answers


async def test_a_run_waiting_goes_to_the_drain_in_one_commit_and_each_asker_gets_its_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    commits: list[float] = []
    async with open_engine(store, [Ledger]) as engine:
        engine.commit_observer = commits.append
        answers = await _queue_behind_hold(engine, [Put(n) for n in (1, 2, 3, 4, 5)])
    assert answers == [2, 4, 6, 8, 10]
    assert Ledger.calls == [("run", [1, 2, 3, 4, 5])]
    assert len(commits) == 1
    assert [await store.get(f"ledger:{n}") for n in (1, 5)] == [b"1", b"5"]


async def test_a_run_ends_at_another_type_and_at_drain_max(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [Ledger], drain_max=3) as engine:
        msgs: list[Any] = [Put(1), Put(2), Put(3), Put(4), Other(), Put(5), Put(6)]
        answers = await _queue_behind_hold(engine, msgs)
    assert answers == [2, 4, 6, 8, "other", 10, 12]
    assert Ledger.calls == [
        ("run", [1, 2, 3]),
        ("one", [4]),  # a run of one
        ("other", []),
        ("run", [5, 6]),
    ]


async def test_drain_max_1_hands_every_message_to_the_one_message_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [Ledger], drain_max=1) as engine:
        answers = await _queue_behind_hold(engine, [Put(1), Put(2)])
    assert answers == [2, 4]
    assert Ledger.calls == [("one", [1]), ("one", [2])]


async def test_the_messages_a_drain_leaves_go_to_the_one_message_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    Ledger.take = 2
    async with open_engine(MemoryStore(), [Ledger]) as engine:
        answers = await _queue_behind_hold(engine, [Put(n) for n in (1, 2, 3)])
    assert answers == [2, 4, 6]
    assert Ledger.calls == [("run", [1, 2, 3]), ("one", [3])]

    Ledger.calls, Ledger.take, Ledger.gate = [], 0, trio.Event()
    async with open_engine(MemoryStore(), [Ledger]) as engine:
        answers = await _queue_behind_hold(engine, [Put(n) for n in (1, 2, 3)])
    assert answers == [2, 4, 6]
    assert Ledger.calls == [("run", [1, 2, 3]), ("one", [1]), ("run", [2, 3]), ("one", [2]),
                            ("one", [3])]  # fmt: skip


async def test_a_refused_answer_of_a_drain_reaches_its_asker_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [Ledger]) as engine:
        answers = await _queue_behind_hold(engine, [Put(1), Put(-1), Put(3)])
    assert answers[0] == 2 and answers[2] == 6
    assert isinstance(answers[1], Refused) and str(answers[1]) == "negative"
    assert Ledger.calls == [("run", [1, -1, 3])]


async def test_a_crashed_drain_retries_its_first_message_alone_and_dead_letters_only_the_poison(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [Ledger], max_retries=2) as engine:
        answers = await _queue_behind_hold(engine, [Put(1), Put(POISON), Put(3)])
    assert answers[0] == 2 and answers[2] == 6
    assert isinstance(answers[1], DeadLettered)
    assert Ledger.calls == [
        ("run", [1, POISON, 3]),  # crashed: 1 goes alone, then the drain again
        ("one", [1]),
        ("run", [POISON, 3]),  # crashed: the poison alone until it is dead-lettered
        ("one", [POISON]),
        ("one", [POISON]),
        ("one", [3]),  # a run of one
    ]
    assert await store.get(f"ledger:{POISON}") is None


def test_a_drain_needs_the_one_message_handler_of_its_type() -> None:
    class Lonely(Actor):
        kind = "lonely"

        @handler
        async def puts(self, msgs: list[Put]) -> list[int]:
            return []

    with pytest.raises(TypeError, match="a drain needs a handler of"):
        Lonely.handlers()
