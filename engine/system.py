"""The engine: virtual actors on a small pool of workers, with OTP-style supervision.

How mail flows: `tell` appends to the actor's mailbox (a plain list, created only while
mail is waiting) and puts the actor on the run queue if it is not already there. A pool
of worker tasks takes actors off the run queue and runs a *turn*: every message waiting
at that moment, one after another. trio's task switch is paid per turn and per
`checkpoint_every` messages, not per message, and an idle actor is just an object. The
pool grows while every worker waits inside a turn (a handler asking another actor), so
asks never starve it. `ask` deadlines are kept on one heap swept by one task, and a
handler may answer with `Forward` to hand an ask on to another actor.

Supervision: a handler that raises restarts its actor (a fresh instance that reloads its
state in `on_activate`; the mailbox is kept) and the message is tried again, up to
`max_retries` times, after which it goes to the dead-letter log with the reason. More
than `intensity` restarts of one actor within `period` seconds escalates: the actor host
fails with `RestartIntensityExceeded`, and its parent supervisor decides (the default
engine tree restarts the host, which drops every resident actor; state is in the store).
"""

from __future__ import annotations

import heapq
import logging
import math
import traceback
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
from tidings.engine.actor import Actor, Address, Forward
from tidings.engine.clock import SystemClock, WallClock
from tidings.engine.errors import (
    AskTimeout,
    DeadLettered,
    EngineStopped,
    MailboxFull,
    Refused,
    RestartIntensityExceeded,
    UnknownActorKind,
)
from tidings.engine.eventlog import EventLog
from tidings.engine.store.base import Batch, Store
from tidings.engine.supervisor import Child, Supervisor
from tidings.engine.timers import TimerFire, Timers

log = logging.getLogger("tidings.engine")

DEAD_LETTERS = "deadletters"


class DeadLetter(msgspec.Struct, frozen=True):
    """A message that could not be handled, as written to the dead-letter log."""

    kind: str
    key: str
    message_type: str
    message: str
    reason: str
    at: float


class _Ask:
    """A message that wants a reply; `done` is set once `value` or `error` is."""

    __slots__ = ("msg", "done", "value", "error")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Engine:
    """An actor system: registered actor kinds, their resident actors, timers, events.

    Make one with `open_engine(...)`, which runs its services and stops them on exit.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: WallClock | None = None,
        workers: int = 64,
        max_workers: int = 10_000,
        worker_linger: float = 5.0,
        mailbox_size: int = 10_000,
        idle_timeout: float = 120.0,
        max_retries: int = 3,
        intensity: int = 10,
        period: float = 5.0,
        checkpoint_every: int = 64,
        timer_window: float = 60.0,
        deadline_compaction: int = 100_000,
    ) -> None:
        self.store = store
        self.clock: WallClock = clock or SystemClock()
        self.workers = workers
        self.max_workers = max_workers
        self.worker_linger = worker_linger
        self.deadline_compaction = deadline_compaction  # ask deadlines kept before answered ones go
        self.mailbox_size = mailbox_size
        self.idle_timeout = idle_timeout
        self.max_retries = max_retries
        self.intensity = intensity
        self.period = period
        self.checkpoint_every = checkpoint_every
        self.kinds: dict[str, type[Actor]] = {}
        self.app: Any = None  # what the actors serve (set by the layer that embeds them)
        self.timers = Timers(self, window=timer_window)
        self.events = EventLog(store)
        self.dead_letters = 0
        self.restarts = 0
        self.handled = 0
        self._resident: OrderedDict[Address, Actor] = OrderedDict()
        self._runq: deque[Actor] = deque()
        self._idle_workers = trio.lowlevel.ParkingLot()
        self._pool: trio.Nursery | None = None
        self._worker_count = 0  # workers alive (the pool grows past `workers` under asks)
        self._in_turn = 0  # workers inside a turn now
        self._room: dict[Address, trio.lowlevel.ParkingLot] = {}
        self._running = False
        self._attempts: dict[Address, int] = {}
        self._dead_letter_queue: deque[tuple[Address, Any, str]] = deque()
        # pending asks by deadline: (deadline, seq, request, address, timeout)
        self._deadlines: list[tuple[float, int, _Ask, Address, float]] = []
        self._next_deadline = math.inf
        self._deadlines_compact_at = deadline_compaction
        self._deadline_lot = trio.lowlevel.ParkingLot()
        self._ask_seq = 0
        self._dead_letter_lot = trio.lowlevel.ParkingLot()

    # -- registration -------------------------------------------------------------------

    def register(self, *classes: type[Actor]) -> None:
        """Make actor kinds addressable; their handlers' message types become durable-timer
        payloads the engine can decode."""
        for cls in classes:
            if not cls.kind:
                raise ValueError(f"{cls.__name__} has no kind")
            self.kinds[cls.kind] = cls
            for msg_type in cls.handlers():
                self.timers.know(cls.kind, msg_type)

    # -- sending ------------------------------------------------------------------------

    @property
    def resident(self) -> int:
        """How many actors are in memory now."""
        return len(self._resident)

    def mailbox_depth(self) -> int:
        """Messages waiting in all mailboxes."""
        return sum(len(a._mail) for a in self._resident.values() if a._mail)

    def _actor(self, address: Address) -> Actor:
        actor = self._resident.get(address)
        if actor is None:
            if not self._running:
                raise EngineStopped()
            cls = self.kinds.get(address[0])
            if cls is None:
                raise UnknownActorKind(f"no actor kind {address[0]!r} is registered")
            actor = cls(self, address[1])
            self._resident[address] = actor
        return actor

    def _post(self, actor: Actor, envelope: Any) -> None:
        mail = actor._mail
        if mail is None:
            actor._mail = [envelope]
        else:
            mail.append(envelope)
        if not actor._running:
            actor._running = True
            self._schedule(actor)

    def _schedule(self, actor: Actor) -> None:
        """Put `actor` on the run queue and make sure a worker will take it.

        A handler that asks another actor holds its worker while it waits. When every
        worker is inside a turn, a new worker is started (up to `max_workers`), so a
        chain of asks can never wait for a worker that only it could free. Extra workers
        leave again once the run queue is empty.
        """
        self._runq.append(actor)
        if self._idle_workers:
            self._idle_workers.unpark()
        elif self._in_turn >= self._worker_count < self.max_workers and self._pool is not None:
            self._worker_count += 1
            self._pool.start_soon(self._worker)

    def tell_nowait(self, address: Address, msg: Any) -> None:
        """Send `msg` to the actor at `address` without waiting; `MailboxFull` if no room."""
        actor = self._actor(address)
        if actor._mail is not None and len(actor._mail) >= self.mailbox_size:
            raise MailboxFull(address, self.mailbox_size)
        self._post(actor, msg)

    async def _reserve(self, address: Address) -> Actor:
        """The actor at `address`, once its mailbox has room (back-pressure)."""
        actor = self._actor(address)
        while actor._mail is not None and len(actor._mail) >= self.mailbox_size:
            await self._room.setdefault(address, trio.lowlevel.ParkingLot()).park()
            actor = self._actor(address)
        return actor

    async def tell(self, address: Address, msg: Any) -> None:
        """Send `msg` to the actor at `address`, waiting while its mailbox is full."""
        self._post(await self._reserve(address), msg)

    async def ask(self, address: Address, msg: Any, timeout: float = 10.0) -> Any:
        """Send `msg` and wait for the handler's return value (or its exception).

        Raises `AskTimeout` after `timeout` seconds, `EngineStopped` if the engine is not
        running, `DeadLettered` if the message could not be handled.
        """
        request = _Ask(msg)
        self._post(await self._reserve(address), request)
        if not request.done.is_set():
            # One sweeper task enforces every ask's deadline: a cancel scope per ask
            # cost a fifth of the server's CPU under chat load (py-spy).
            deadline = trio.current_time() + timeout
            self._ask_seq += 1
            deadlines = self._deadlines
            if len(deadlines) >= self._deadlines_compact_at:
                # answered asks stay on the heap until their deadline: drop them now
                deadlines[:] = [entry for entry in deadlines if not entry[2].done.is_set()]
                heapq.heapify(deadlines)
                self._deadlines_compact_at = max(self.deadline_compaction, 2 * len(deadlines))
            heapq.heappush(deadlines, (deadline, self._ask_seq, request, address, timeout))
            if deadline < self._next_deadline:
                self._deadline_lot.unpark_all()
            await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.value

    async def _deadline_sweeper(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Fail asks whose deadline passed with `AskTimeout`."""
        task_status.started()
        heap = self._deadlines
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, request, address, timeout = heapq.heappop(heap)
                if not request.done.is_set():
                    request.error = AskTimeout(address, timeout)
                    request.done.set()
            self._next_deadline = heap[0][0] if heap else math.inf
            with trio.move_on_at(self._next_deadline):
                await self._deadline_lot.park()

    async def commit(self, batch: Batch) -> list[int]:
        """Write `batch` durably and publish its events to live subscribers."""
        seqs = await self.store.commit(batch)
        if seqs:
            self.events.published(seqs, batch.events)
        return seqs

    # -- running ------------------------------------------------------------------------

    async def _worker(self) -> None:
        runq = self._runq
        budget = self.checkpoint_every
        while True:
            if not runq:
                if self._worker_count > self.workers:
                    # an extra worker lingers a while, so a busy pool does not churn tasks
                    with trio.move_on_after(self.worker_linger) as idle:
                        await self._idle_workers.park()
                    if idle.cancelled_caught:
                        self._worker_count -= 1  # the rush is over
                        return
                else:
                    await self._idle_workers.park()
                budget = self.checkpoint_every
                continue
            actor = runq.popleft()
            self._in_turn += 1
            try:
                budget = await self._turn(actor, budget)
            finally:
                self._in_turn -= 1
            if budget <= 0:
                await trio.lowlevel.checkpoint()
                budget = self.checkpoint_every

    async def _turn(self, actor: Actor, budget: int) -> int:
        """Handle the mail waiting for `actor`; return what is left of the budget."""
        address = (actor.kind, actor.key)
        if self._resident.get(address) is not actor:
            return budget  # replaced by a restart while queued
        mail, actor._mail = actor._mail, None
        i = 0
        try:
            if not actor._active:
                await actor.on_activate()
                actor._active = True
            handlers = actor.handlers()
            n = len(mail) if mail else 0
            while i < n:
                envelope = mail[i]  # type: ignore[index]
                await self._handle(actor, handlers, envelope)
                i += 1
                budget -= 1
                if budget <= 0 and i < n:
                    await trio.lowlevel.checkpoint()
                    budget = self.checkpoint_every
        except Exception as exc:
            rest = mail[i:] if mail else []
            self._crashed(actor, rest, exc)
            return budget
        if self._resident.get(address) is actor:
            self._resident.move_to_end(address)
        actor._last = trio.current_time()
        self.handled += i
        room = self._room.pop(address, None)
        if room is not None:
            room.unpark_all()
        if actor._mail:
            self._runq.append(actor)
        else:
            actor._running = False
        return budget

    async def _handle(self, actor: Actor, handlers: dict[type, Any], envelope: Any) -> None:
        request = envelope if type(envelope) is _Ask else None
        msg = request.msg if request is not None else envelope
        fire = msg if type(msg) is TimerFire else None
        if fire is not None:
            msg = fire.msg
        fn = handlers.get(type(msg))
        if fn is None:
            reason = f"no handler for {type(msg).__name__}"
            await self._dead_letter(actor.address, msg, reason)
            if request is not None:
                request.error = DeadLettered(actor.address, reason)
                request.done.set()
            return
        error: Refused | None = None
        try:
            value = await fn(actor, msg)
        except Refused as refusal:
            if request is None:
                log.info("%s:%s refused %s: %s", *actor.address, type(msg).__name__, refusal)
            value, error = None, refusal
        self._attempts.pop(actor.address, None)
        if fire is not None:
            await self.timers.fired(fire)
        if type(value) is Forward:
            target = self._actor(value.address)
            if request is not None:
                request.msg = value.msg
                self._post(target, request)
            else:
                self._post(target, value.msg)
            return
        if request is not None:
            request.value, request.error = value, error
            request.done.set()

    def _crashed(self, actor: Actor, rest: list[Any], exc: Exception) -> None:
        """Restart `actor` after `exc`; retry or dead-letter the message at `rest[0]`."""
        address = actor.address
        now = trio.current_time()
        failures = [t for t in (actor._failures or ()) if now - t < self.period]
        failures.append(now)
        self.restarts += 1
        log.warning("actor %s:%s crashed: %r", address[0], address[1], exc)
        fresh = type(actor)(self, actor.key)
        fresh._failures = failures
        pending = rest + (actor._mail or [])
        if rest:
            attempts = self._attempts.get(address, 0) + 1
            if attempts > self.max_retries:
                self._attempts.pop(address, None)
                failed = pending.pop(0)
                reason = "".join(traceback.format_exception_only(exc)).strip()
                self._spawn_dead_letter(address, failed, f"crashed {attempts} times: {reason}")
            else:
                self._attempts[address] = attempts
        fresh._mail = pending or None
        self._resident[address] = fresh
        actor._running = False
        if len(failures) > self.intensity:
            for envelope in pending:
                if type(envelope) is _Ask:
                    envelope.error = DeadLettered(address, "restart intensity exceeded")
                    envelope.done.set()
            del self._resident[address]
            raise RestartIntensityExceeded(
                f"{address[0]}:{address[1]} restarted {len(failures)} times in {self.period:g} s"
            ) from exc
        if fresh._mail:
            fresh._running = True
            self._schedule(fresh)

    def _spawn_dead_letter(self, address: Address, envelope: Any, reason: str) -> None:
        request = envelope if type(envelope) is _Ask else None
        msg = request.msg if request is not None else envelope
        if request is not None:
            request.error = DeadLettered(address, reason)
            request.done.set()
        self._dead_letter_queue.append((address, msg, reason))
        self._dead_letter_lot.unpark()

    async def _dead_letter(self, address: Address, msg: Any, reason: str) -> None:
        if type(msg) is TimerFire:
            msg = msg.msg
        try:
            body = msgspec.json.encode(msg).decode()
        except (TypeError, msgspec.EncodeError):
            body = repr(msg)
        letter = DeadLetter(
            address[0], address[1], type(msg).__name__, body, reason, self.clock.now()
        )
        batch = Batch()
        batch.append(DEAD_LETTERS, msgspec.json.encode(letter))
        await self.store.commit(batch)
        self.dead_letters += 1
        log.error("dead letter for %s:%s: %s", address[0], address[1], reason)

    async def _dead_letter_writer(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            while self._dead_letter_queue:
                address, msg, reason = self._dead_letter_queue.popleft()
                await self._dead_letter(address, msg, reason)
            await self._dead_letter_lot.park()

    async def _passivator(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await trio.sleep(max(self.idle_timeout / 4, 0.01))
            await self.passivate_idle()

    async def passivate_idle(self) -> int:
        """Drop actors idle for `idle_timeout` from memory; return how many."""
        limit = trio.current_time() - self.idle_timeout
        idle: list[Actor] = []
        for actor in self._resident.values():
            if actor._last > limit:
                break  # resident is kept in order of last use
            if not actor._running and not actor._mail:
                idle.append(actor)
        for actor in idle:
            address = actor.address
            if self._resident.get(address) is actor and not actor._running and not actor._mail:
                del self._resident[address]
                if actor._active:
                    await actor.on_passivate()
        return len(idle)

    async def _host(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor host: the worker pool. Restarting it drops every resident actor."""
        self._drop_resident()
        self._in_turn = 0
        self._worker_count = self.workers
        try:
            async with trio.open_nursery() as nursery:
                self._pool = nursery
                for _ in range(self.workers):
                    nursery.start_soon(self._worker)
                task_status.started()
        finally:
            self._pool = None
            self._runq.clear()

    def _drop_resident(self) -> None:
        for actor in self._resident.values():
            for envelope in actor._mail or ():
                if type(envelope) is _Ask:
                    envelope.error = EngineStopped()
                    envelope.done.set()
        self._resident.clear()
        self._runq.clear()

    def children(self) -> list[Child]:
        """The engine's services, as supervised children (timers, dead letters, host, ...)."""
        return [
            Child("dead-letters", self._dead_letter_writer),
            Child("ask-deadlines", self._deadline_sweeper),
            Child("timers", self.timers.run),
            Child("actor-host", self._host),
            Child("passivator", self._passivator),
        ]

    async def _stop(self) -> None:
        self._running = False
        for actor in list(self._resident.values()):
            if actor._active:
                with trio.CancelScope(shield=True):
                    await actor.on_passivate()
        self._drop_resident()


@asynccontextmanager
async def open_engine(
    store: Store,
    actors: Iterable[type[Actor]] = (),
    *,
    services: Iterable[Child] = (),
    **options: Any,
) -> AsyncIterator[Engine]:
    """Run an engine with its services (and `services`, started after them) under one
    `one_for_one` supervisor; on exit, passivate resident actors and stop everything."""
    engine = Engine(store, **options)
    engine.register(*actors)
    engine._running = True
    await engine.events.start()
    supervisor = Supervisor([*engine.children(), *services], strategy="one_for_one")
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            yield engine
        finally:
            await engine._stop()
            nursery.cancel_scope.cancel()
