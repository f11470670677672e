"""Supervision with Erlang/OTP semantics: actor restarts, retries, dead letters,
escalation, and supervisors' strategies, restart types and shutdown timeouts."""

from __future__ import annotations

import msgspec
import pytest
import trio
import trio.lowlevel
import trio.testing

from tidings.engine import (
    DEAD_LETTERS,
    Actor,
    Batch,
    Child,
    DeadLettered,
    Request,
    RestartIntensityExceeded,
    Supervisor,
    handler,
    open_engine,
)
from tidings.engine.store.memory import MemoryStore


class Crash(Request[str]):
    times: int  # crash while the stored count of attempts is below this


class Note(Request[None]):
    text: str


class Read(Request[list[str]]):
    pass


class FlakyActor(Actor):
    """Keeps notes in the store; crashes on `Crash` a given number of times."""

    kind = "flaky"
    __slots__ = ("notes", "generation")
    instances = 0

    async def on_activate(self) -> None:
        type(self).instances += 1
        raw = await self.ctx.store.get(f"notes:{self.key}")
        self.notes = msgspec.json.decode(raw, type=list[str]) if raw else []

    async def _save(self) -> None:
        batch = Batch()
        batch.put(f"notes:{self.key}", msgspec.json.encode(self.notes))
        await self.ctx.commit(batch)

    @handler
    async def crash(self, msg: Crash) -> str:
        self.notes.append("try")
        await self._save()
        if self.notes.count("try") <= msg.times:
            raise RuntimeError(f"boom {self.notes.count('try')}")
        return "survived"

    @handler
    async def note(self, msg: Note) -> None:
        self.notes.append(msg.text)
        await self._save()

    @handler
    async def read(self, msg: Read) -> list[str]:
        return list(self.notes)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_crashing_actor_restarts_from_stored_state_and_retries_the_message(
    clock: trio.testing.MockClock,
) -> None:
    async with open_engine(MemoryStore(), [FlakyActor], max_retries=3) as engine:
        address = ("flaky", "1")
        await engine.ask(address, Note("before"))
        FlakyActor.instances = 0
        engine.tell_nowait(address, Note("unsaved"))  # waits in the mailbox behind the crash
        result = await engine.ask(address, Crash(times=2))
        assert result == "survived"
        assert FlakyActor.instances == 2  # two restarts, each a fresh instance
        notes = await engine.ask(address, Read())
        # the mailbox survived the restarts: the note told before still arrives
        assert notes == ["before", "unsaved", "try", "try", "try"]
        assert engine.restarts == 2


async def test_message_that_keeps_crashing_goes_to_dead_letters_with_its_reason(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [FlakyActor], max_retries=2) as engine:
        address = ("flaky", "2")
        with pytest.raises(DeadLettered, match="crashed 3 times: RuntimeError: boom 3"):
            await engine.ask(address, Crash(times=100))
        await engine.ask(address, Note("after"))  # the actor goes on with the next message
        assert (await engine.ask(address, Read()))[-1] == "after"
        await trio.sleep(0.1)
        [letter] = await store.log_tail(DEAD_LETTERS, 5)
        decoded = msgspec.json.decode(letter)
        assert decoded["kind"] == "flaky" and decoded["key"] == "2"
        assert decoded["message_type"] == "Crash"
        assert "boom 3" in decoded["reason"]


async def test_an_actor_failing_beyond_intensity_is_quarantined_then_activated_afresh(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    options = {"max_retries": 100, "intensity": 3, "period": 5, "quarantine_s": 30}
    async with open_engine(store, [FlakyActor], **options) as engine:
        address = ("flaky", "3")
        await engine.ask(address, Note("kept"))
        FlakyActor.instances = 0
        engine.tell_nowait(address, Crash(times=100))
        engine.tell_nowait(address, Note("waiting"))  # behind the crashes: dead-lettered too
        await trio.sleep(1)
        assert engine.quarantined == 1
        assert FlakyActor.instances == 3  # three restarts, then the quarantine
        assert engine.resident == 0  # dropped from memory
        # during the back-off its mail is dead-lettered, and it is not activated
        with pytest.raises(DeadLettered, match="quarantined"):
            await engine.ask(address, Read())
        engine.tell_nowait(address, Note("refused"))
        assert FlakyActor.instances == 3
        await trio.sleep(30)
        # the first message after the back-off activates it afresh from its stored state
        assert await engine.ask(address, Read()) == ["kept", "try", "try", "try", "try"]
        assert FlakyActor.instances == 4
        letters = [msgspec.json.decode(raw) for raw in await store.log_tail(DEAD_LETTERS, 10)]
        assert letters[0]["reason"] == "quarantined: RuntimeError: boom 4"
        assert [(d["message_type"], d["reason"].split(":")[0]) for d in letters] == [
            ("Crash", "quarantined"),  # with the reason: "quarantined: RuntimeError: boom 4"
            ("Note", "quarantined"),
            ("Read", "quarantined"),
            ("Note", "quarantined"),
        ]
        # a second quarantine in a row lasts twice as long
        with pytest.raises(DeadLettered, match="quarantined"):
            await engine.ask(address, Crash(times=100))
        await trio.sleep(30)
        with pytest.raises(DeadLettered, match="quarantined"):
            await engine.ask(address, Read())
        await trio.sleep(30)
        assert (await engine.ask(address, Read()))[0] == "kept"
        assert engine.quarantined == 2


class Poison(msgspec.Struct):
    pass


class PoisonedActor(Actor):
    """Raises on every message."""

    kind = "poisoned"
    __slots__ = ()

    @handler
    async def poison(self, msg: Poison) -> None:
        raise OverflowError("date value out of range")


class Ping(Request[str]):
    pass


class HealthyActor(Actor):
    kind = "healthy"
    __slots__ = ()

    @handler
    async def ping(self, msg: Ping) -> str:
        return self.key


async def test_a_poisoned_actor_kind_never_takes_the_host_down(
    clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_engine(store, [PoisonedActor, HealthyActor], quarantine_s=3600) as engine:
        answered = 0

        async def keep_asking() -> None:
            nonlocal answered
            for i in range(2000):
                assert await engine.ask(("healthy", str(i % 50)), Ping()) == str(i % 50)
                answered += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_asking)
            for i in range(10_000):
                await engine.tell(("poisoned", str(i % 1000)), Poison())
                if i % 100 == 0:
                    await trio.lowlevel.checkpoint()
        assert answered == 2000  # every ask answered while the poisoned kind failed
        await trio.sleep(1)  # the dead-letter writer catches up
        assert engine.quarantined > 0
        assert engine.dead_letters == 10_000  # every poisoned message, none lost
        assert len(await store.log_tail(DEAD_LETTERS, 20_000)) == 10_000
        assert engine.restarts >= 1000
        # the host and the engine's supervisor are still running: new actors still answer
        assert await engine.ask(("healthy", "new"), Ping(), timeout=1) == "new"
        assert engine.resident <= 50 + 1000


# -- supervisors ---------------------------------------------------------------------------


class Recorder:
    """Children that log their starts and stops and can be told to fail or return."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.fail: dict[str, trio.Event] = {}
        self.finish: dict[str, trio.Event] = {}

    def child(self, name: str, restart: str = "permanent", **kw: object) -> Child:
        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            self.fail[name] = trio.Event()
            self.finish[name] = trio.Event()
            self.log.append(f"start {name}")
            task_status.started()
            try:
                async with trio.open_nursery() as n:

                    async def wait_fail() -> None:
                        await self.fail[name].wait()
                        raise RuntimeError(f"{name} failed")

                    async def wait_finish() -> None:
                        await self.finish[name].wait()
                        n.cancel_scope.cancel()

                    n.start_soon(wait_fail)
                    n.start_soon(wait_finish)
            finally:
                self.log.append(f"stop {name}")

        return Child(name, run, restart=restart, **kw)  # type: ignore[arg-type]


async def run_and_fail(sup: Supervisor, rec: Recorder, name: str) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        rec.log.clear()
        rec.fail[name].set()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", ["stop b", "start b"]),
        ("one_for_all", ["stop b", "stop c", "stop a", "start a", "start b", "start c"]),
        ("rest_for_one", ["stop b", "stop c", "start b", "start c"]),
    ],
)
async def test_supervisor_strategies_restart_the_right_children(
    clock: trio.testing.MockClock, strategy: str, expected: list[str]
) -> None:
    rec = Recorder()
    sup = Supervisor([rec.child("a"), rec.child("b"), rec.child("c")], strategy=strategy)  # type: ignore[arg-type]
    await run_and_fail(sup, rec, "b")
    assert rec.log[: len(expected)] == expected
    assert sup.restarts == 1


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        ("permanent", "finish", True),
        ("permanent", "fail", True),
        ("transient", "finish", False),
        ("transient", "fail", True),
        ("temporary", "fail", False),
    ],
)
async def test_restart_types_decide_whether_a_child_comes_back(
    clock: trio.testing.MockClock, restart: str, how: str, restarted: bool
) -> None:
    rec = Recorder()
    sup = Supervisor([rec.child("keep"), rec.child("x", restart=restart)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        rec.log.clear()
        (rec.fail if how == "fail" else rec.finish)["x"].set()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert ("start x" in rec.log) is restarted


async def test_too_many_restarts_stop_the_children_and_escalate(
    clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    sup = Supervisor([rec.child("a"), rec.child("b")], intensity=2, period=10)
    with pytest.RaisesGroup(
        pytest.RaisesExc(RestartIntensityExceeded, match="3 restarts in 10 s"),
        flatten_subgroups=True,
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for _ in range(3):
                rec.fail["b"].set()
                await trio.sleep(1)
    assert rec.log[-2:] == ["stop b", "stop a"] or rec.log[-1] == "stop a"


async def test_restarts_spread_beyond_the_period_do_not_escalate(
    clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    sup = Supervisor([rec.child("a")], intensity=1, period=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for _ in range(4):
            rec.fail["a"].set()
            await trio.sleep(6)
        nursery.cancel_scope.cancel()
    assert sup.restarts == 4


async def test_graceful_child_gets_its_shutdown_time_then_is_cancelled(
    clock: trio.testing.MockClock,
) -> None:
    stopped_at: dict[str, float] = {}

    def child(name: str, cleanup: float, shutdown: float) -> Child:
        async def run(stopping: trio.Event, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            await stopping.wait()
            try:
                await trio.sleep(cleanup)  # finishing in-flight work
                stopped_at[name] = trio.current_time()
            except trio.Cancelled:
                stopped_at[name] = -trio.current_time()
                raise

        return Child(name, run, shutdown=shutdown, graceful=True)

    sup = Supervisor([child("quick", 2, 5), child("stuck", 100, 3)])
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        nursery.cancel_scope.cancel()
    # stopped in reverse order: "stuck" first, killed after its 3 s; then "quick" finishes
    assert stopped_at["stuck"] == pytest.approx(-(start + 3))
    assert stopped_at["quick"] == pytest.approx(start + 3 + 2)
