"""The engine: virtual actors on a small pool of workers, with contained failures.

How mail flows: `tell` appends to the actor's mailbox (a plain list, created only while
mail is waiting) and puts the actor on the run queue if it is not already there. A pool
of worker tasks takes actors off the run queue and runs a *turn*: every message waiting
at that moment, one after another. trio's task switch is paid per turn and per
`checkpoint_every` messages, not per message, and an idle actor is just an object. The
pool grows while every worker waits inside a turn (a handler asking another actor), so
asks never starve it. `ask` deadlines are kept by `asks.AskDeadlines`, and a handler may
answer with `Forward` to hand an ask on to another actor. When several messages of one
type wait in a row and the actor has a *drain* for that type (see `actor.handler`), the
turn hands them to it in one call, so they are handled in one commit and answered after
it (Akka's and Orleans' batching of a mailbox); the rest go one by one as before.

Actors see the engine through one shared `ActorContext` (store, clock, timers, tell, ask,
commit and the embedding layer's `app`). Every write (actors', timers', dead letters')
passes `Engine.commit`, the one commit path.

Failures are contained (Erlang's "let it crash", Orleans' grain isolation): a handler
that raises restarts its actor (a fresh instance that reloads its state; the mailbox is
kept) and the message is tried again, up to `max_retries` times, after which it goes to
the dead-letter log with the reason. An actor that fails more than `intensity` times
within `period` seconds is *quarantined*: its waiting mail is dead-lettered, it is
dropped from memory, and for `quarantine_s` seconds (doubling for each repeated
quarantine, up to `quarantine_max_s`) messages to it are dead-lettered as "quarantined";
the first message after that activates it afresh. Actor failures never reach the
supervisor: only the engine's services (actor host, timers, dead-letter writer, ask
deadlines, passivator, retention) and those given to `open_engine` are restarted under the OTP
semantics of `supervisor.Supervisor`.

Several engines (nodes) may share one Redis store when each is given a `Placement`:
then an actor runs only on the node that holds its shard, mail for the others goes
through `remote.RemoteMail`, every commit of an actor's turn carries the fencing token
its node held when the actor was activated (a refused, `Fenced`, write drops the shard
here and sends the actor's mail on), and the events other nodes commit are tailed from
the store and published here too.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar

import trio

from tidings.engine.actor import Actor, Forward, Handler
from tidings.engine.asks import Ask, AskDeadlines
from tidings.engine.clock import SystemClock, WallClock
from tidings.engine.context import ActorContext
from tidings.engine.deadletters import DeadLetters
from tidings.engine.errors import (
    DeadLettered,
    EngineError,
    EngineStopped,
    MailboxFull,
    Refused,
    UnknownActorKind,
)
from tidings.engine.eventlog import EventLog
from tidings.engine.messages import Address, Request
from tidings.engine.placement import Placement, ShardMoved
from tidings.engine.remote import RemoteMail, type_name
from tidings.engine.retention import SERVICE as RETENTION
from tidings.engine.retention import Retention
from tidings.engine.store.base import Batch, Fenced, Store, StoreError
from tidings.engine.supervisor import Child, Supervisor
from tidings.engine.timers import TimerFire, Timers

log = logging.getLogger("tidings.engine")

R = TypeVar("R")
AppT = TypeVar("AppT")

# The fencing token of the actor whose turn a worker task is running (placed engines
# only): `Engine.commit` puts it on the batch. A context variable, because the one shared
# `ActorContext.commit` cannot tell which actor calls it.
_turn_token: ContextVar[tuple[int, int] | None] = ContextVar("tidings_turn_token", default=None)
# The done key of the mail from another node being handled (see `RemoteMail.done_key`).
_turn_mail: ContextVar[str | None] = ContextVar("tidings_turn_mail", default=None)


class Engine:
    """An actor system: registered actor kinds, their resident actors, timers, events.

    Make one with `open_engine(...)`, which runs its services and stops them on exit.
    """

    def __init__(
        self,
        store: Store,
        *,
        app: Any = None,
        clock: WallClock | None = None,
        workers: int = 64,
        max_workers: int = 10_000,
        worker_linger: float = 5.0,
        mailbox_size: int = 10_000,
        idle_timeout: float = 120.0,
        max_retries: int = 3,
        intensity: int = 10,
        period: float = 5.0,
        quarantine_s: float = 30.0,
        quarantine_max_s: float = 3600.0,
        checkpoint_every: int = 64,
        drain_max: int = 64,
        timer_window: float = 60.0,
        deadline_compaction: int = 4_096,
        placement: Placement | None = None,
        events_kept_s: float = 7 * 86400.0,
        retention_every: float = 3600.0,
        dead_letters_kept: int = 10_000,
    ) -> None:
        self.store = store
        self.clock: WallClock = clock or SystemClock()
        self.workers = workers
        self.max_workers = max_workers
        self.worker_linger = worker_linger
        self.mailbox_size = mailbox_size
        self.idle_timeout = idle_timeout
        self.max_retries = max_retries
        self.intensity = intensity
        self.period = period
        self.quarantine_s = quarantine_s
        self.quarantine_max_s = quarantine_max_s
        self.checkpoint_every = checkpoint_every
        if drain_max < 1:
            raise ValueError(f"drain_max must be at least 1 (1: no drains), not {drain_max}")
        # messages handed to a drain at most at once; none on placed nodes, where each
        # message from another node is marked done in its own commit (`_turn_mail`)
        self.drain_max = drain_max if placement is None else 1
        # told each commit's duration in seconds (metrics); None costs nothing per commit
        self.commit_observer: Callable[[float], None] | None = None
        self.kinds: dict[str, type[Actor[Any]]] = {}
        self.events = EventLog(store)
        self.letters = DeadLetters(self.commit, self.clock, store, keep=dead_letters_kept)
        self.retention = Retention(
            store,
            self.events,
            self.clock,
            self.commit,
            events_kept_s=events_kept_s,
            every=retention_every,
        )
        self.asks = AskDeadlines(deadline_compaction)
        self.timers = Timers(
            store,
            self.clock,
            commit=self.commit,
            deliver=self.tell_nowait,
            dead_letter=self.letters.add,
            window=timer_window,
        )
        self.context: ActorContext[Any] = ActorContext(self, app)
        # several nodes on one store: which actors run here, and mail to the others
        self.placement = placement
        self.remote: RemoteMail | None = None
        if placement is not None:
            self.remote = RemoteMail(placement, self.clock, self._message_type, self._deliver)
            self.remote.listeners["announce"] = self.events.announce
            self.timers.owns = placement.owns
        self._message_types: dict[str, type[Any]] = {}
        self.restarts = 0
        self.quarantined = 0  # quarantines so far
        self.handled = 0
        self._resident: OrderedDict[Address, Actor[Any]] = OrderedDict()
        self._runq: deque[Actor[Any]] = deque()
        self._idle_workers = trio.lowlevel.ParkingLot()
        self._pool: trio.Nursery | None = None
        self._worker_count = 0  # workers alive (the pool grows past `workers` under asks)
        self._in_turn = 0  # workers inside a turn now
        self._room: dict[Address, trio.lowlevel.ParkingLot] = {}
        self._running = False
        self._attempts: dict[Address, int] = {}
        # quarantined addresses: (until, in trio time; how many quarantines in a row)
        self._quarantine: dict[Address, tuple[float, int]] = {}

    @property
    def app(self) -> Any:
        """The domain context actors get as `ctx.app` (given to `open_engine`)."""
        return self.context.app

    @property
    def dead_letters(self) -> int:
        """How many dead letters were written."""
        return self.letters.count

    # -- registration -------------------------------------------------------------------

    def register(self, *classes: type[Actor[Any]]) -> None:
        """Make actor kinds addressable; their handlers' tagged message types become
        durable-timer payloads the engine can decode."""
        for cls in classes:
            if not cls.kind:
                raise ValueError(f"{cls.__name__} has no kind")
            self.kinds[cls.kind] = cls
            for msg_type in cls.handlers():
                self.timers.know(msg_type)
                self._message_types[type_name(msg_type)] = msg_type

    def _message_type(self, name: str) -> type[Any] | None:
        return self._message_types.get(name)

    def owns(self, address: Address) -> bool:
        """Whether the actor at `address` runs on this node (always, unless placed)."""
        return self.placement is None or self.placement.owns(address)

    async def while_owned(
        self, address: Address, service: Callable[..., Awaitable[Any]], poll: float = 0.5
    ) -> None:
        """Run `service` (started with `nursery.start`) whenever this node holds the shard
        of `address`, as that address's actor would run here, and cancel it when the shard
        leaves (looked at every `poll` seconds). Its commits, and those of the tasks it
        starts, carry the fencing token the shard had when it started: once another node
        took the shard nothing it writes lands, even from a node paused past its lease
        that has not looked yet (the fenced write tells the placement at once, and ends
        the service here rather than failing it). Without a placement, `service` just
        runs."""
        if self.placement is None:
            await service()
            return
        while True:
            while not self.owns(address):  # noqa: ASYNC110 - polled: placement signals no arrival
                await trio.sleep(poll)
            reset = _turn_token.set(self.placement.token(address))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._cancel_when_gone, address, poll, nursery.cancel_scope)
                    await nursery.start(service)
            except* Fenced:
                pass  # another node took the shard (the placement dropped it here): wait
            finally:
                _turn_token.reset(reset)

    async def _retention(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The retention service; placed, the holder of `retention.SERVICE`'s shard sweeps
        and every node learns from the store which events are gone."""
        if self.placement is None:
            await self.retention.run(task_status)
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(self.retention.run, writes=False))
            task_status.started()
            await self.while_owned(RETENTION, self.retention.run)

    async def _cancel_when_gone(
        self, address: Address, poll: float, scope: trio.CancelScope
    ) -> None:
        while self.owns(address):  # noqa: ASYNC110 - polled like the arrival
            await trio.sleep(poll)
        scope.cancel()

    # -- sending ------------------------------------------------------------------------

    @property
    def resident(self) -> int:
        """How many actors are in memory now."""
        return len(self._resident)

    def mailbox_depth(self) -> int:
        """Messages waiting in all mailboxes."""
        return sum(len(a._mail) for a in self._resident.values() if a._mail)

    def _actor(self, address: Address, envelope: Any) -> Actor[Any] | None:
        """The actor at `address`, made when not resident; None (and `envelope`
        dead-lettered) while the address is quarantined."""
        actor = self._resident.get(address)
        if actor is None:
            if not self._running:
                raise EngineStopped()
            cls = self.kinds.get(address[0])
            if cls is None:
                raise UnknownActorKind(f"no actor kind {address[0]!r} is registered")
            if self.remote is not None and not self.owns(address):
                self._send_away(address, envelope)
                return None
            if address in self._quarantine:
                until, _ = self._quarantine[address]
                if trio.current_time() < until:
                    self._dead_letter_envelope(address, envelope, "quarantined")
                    return None
            actor = cls(self.context, address[1])
            self._resident[address] = actor
        return actor

    def _post(self, actor: Actor[Any], envelope: Any) -> None:
        mail = actor._mail
        if mail is None:
            actor._mail = [envelope]
        else:
            mail.append(envelope)
        if not actor._running:
            actor._running = True
            self._schedule(actor)

    def _schedule(self, actor: Actor[Any]) -> None:
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
        actor = self._resident.get(address) or self._actor(address, msg)
        if actor is None:
            return
        if actor._mail is not None and len(actor._mail) >= self.mailbox_size:
            raise MailboxFull(address, self.mailbox_size)
        self._post(actor, msg)

    async def _reserve(self, address: Address, envelope: Any) -> Actor[Any] | None:
        """The actor at `address`, once its mailbox has room (back-pressure)."""
        actor = self._resident.get(address) or self._actor(address, envelope)
        while (
            actor is not None and actor._mail is not None and len(actor._mail) >= self.mailbox_size
        ):
            await self._room.setdefault(address, trio.lowlevel.ParkingLot()).park()
            actor = self._actor(address, envelope)
        return actor

    async def tell(self, address: Address, msg: Any) -> None:
        """Send `msg` to the actor at `address`, waiting while its mailbox is full."""
        actor = await self._reserve(address, msg)
        if actor is not None:
            self._post(actor, msg)

    async def ask(self, address: Address, msg: Request[R], timeout: float = 10.0) -> R:
        """Send `msg` and wait for the handler's answer (or its exception).

        Raises `AskTimeout` after `timeout` seconds, `EngineStopped` if the engine is not
        running, `DeadLettered` if the message could not be handled.
        """
        request = Ask(msg)
        if self.remote is not None and address not in self._resident and not self.owns(address):
            if not self._running:
                raise EngineStopped()
            self.remote.send(address, request, timeout)
        else:
            actor = await self._reserve(address, request)
            if actor is not None:
                self._post(actor, request)
        if not request.done:
            self.asks.add(request, address, timeout)
            await request.wait()
        error, value = request.error, request.value
        # the deadline heap keeps the answered ask a while: without its message and
        # answer it holds nothing more for the garbage collector to scan again and again
        request.msg = request.value = None
        if error is not None:
            raise error
        answer: R = value  # the handler's answer to a Request[R]
        return answer

    async def commit(self, batch: Batch) -> list[int]:
        """Write `batch` durably and publish its events to live subscribers.

        The one commit path: every write of actors, timers and dead letters passes here.
        With a placement, the batch carries the turn's fencing token (checked by the
        store) and the done key of the mail from another node being handled.
        """
        observe = self.commit_observer
        started = time.perf_counter() if observe is not None else 0.0
        if self.placement is not None:
            batch.fence = _turn_token.get()
            done = _turn_mail.get()
            if done is not None:
                batch.put(done, b"")
            try:
                seqs = await self.store.commit(batch)
            except Fenced:
                assert batch.fence is not None
                self.placement.lost(self, batch.fence[0])
                raise
        else:
            seqs = await self.store.commit(batch)
        if observe is not None:
            observe(time.perf_counter() - started)
        if seqs:
            self.events.published(seqs, batch.events)
        return seqs

    def announce(self, payload: bytes) -> None:
        """Push a live-only event to the event log's subscribers connected now (on every
        node): it is not stored, takes no sequence number and is never replayed."""
        self.events.announce(payload)
        if self.remote is not None:
            self.remote.notify("announce", payload)

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

    async def _turn(self, actor: Actor[Any], budget: int) -> int:
        """Handle the mail waiting for `actor`; return what is left of the budget."""
        address = (actor.kind, actor.key)
        if self._resident.get(address) is not actor:
            return budget  # replaced by a restart while queued
        mail, actor._mail = actor._mail, None
        i = 0
        n = len(mail) if mail else 0
        try:
            if self.placement is not None:
                if not actor._active:
                    actor._token = self.placement.token(address)
                _turn_token.set(actor._token)
            if not actor._active:
                await actor._activate()
                actor._active = True
            handlers = actor.handlers()
            drains = actor.drains() if self.drain_max > 1 else None
            while i < n:
                envelope = mail[i]  # type: ignore[index]  # n > 0 only when mail is a list
                # a run needs two waiting; not while a crashed message is retried: it
                # goes alone, as it did
                taken = 0
                if drains and n - i > 1 and address not in self._attempts:
                    taken = await self._drain(actor, drains, mail, i, n)  # type: ignore[arg-type]
                if taken == 0:
                    await self._handle(actor, handlers, envelope)
                    taken = 1
                i += taken
                budget -= taken
                if budget <= 0 and i < n:
                    await trio.lowlevel.checkpoint()
                    budget = self.checkpoint_every
        except Fenced:
            self._move_away(actor, mail[i:] if mail else [])
            return budget
        except Exception as exc:
            self._crashed(actor, mail[i:] if mail else [], exc)
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

    async def _handle(
        self, actor: Actor[Any], handlers: dict[type, Handler], envelope: Any
    ) -> None:
        request = envelope if type(envelope) is Ask else None
        msg = request.msg if request is not None else envelope
        fire = msg if type(msg) is TimerFire else None
        if fire is not None:
            msg = fire.msg
        fn = handlers.get(type(msg))
        if fn is None:
            reason = f"no handler for {type(msg).__name__}"
            await self.letters.write(actor.address, msg, reason)
            if request is not None:
                request.fail(DeadLettered(actor.address, reason))
            return
        error: Refused | None = None
        if self.remote is not None:
            _turn_mail.set(self.remote.done_key(request) if request is not None else None)
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
            forwarded = request if request is not None else value.msg
            if request is not None:
                request.msg = value.msg
            target = self._resident.get(value.address) or self._actor(value.address, forwarded)
            if target is not None:
                self._post(target, forwarded)
            return
        if request is not None:
            request.answer(value, error)

    async def _drain(
        self, actor: Actor[Any], drains: dict[type, Handler], mail: list[Any], i: int, n: int
    ) -> int:
        """Hand the run of messages of one type waiting at `mail[i]` to the actor's drain
        for that type, when the run is two or more long; answer those it handled and
        return how many (0: `mail[i]` goes to its one-message handler)."""
        kind = type(_message(mail[i]))
        fn = drains.get(kind)
        if fn is None:
            return 0
        end = i + 1
        limit = min(n, i + self.drain_max)
        while end < limit and type(_message(mail[end])) is kind:
            end += 1
        if end - i < 2:
            return 0
        run = mail[i:end]
        answers = await fn(actor, [_message(e) for e in run])
        if len(answers) > len(run):
            raise TypeError(f"{fn.__qualname__} answered {len(answers)} of {len(run)} messages")
        for envelope, answer in zip(run, answers, strict=False):  # a prefix answered
            refused = answer if isinstance(answer, Refused) else None
            if type(envelope) is Ask:
                envelope.answer(None if refused else answer, refused)
            elif refused is not None:
                log.info("%s:%s refused %s: %s", *actor.address, kind.__name__, refused)
        return len(answers)

    def _crashed(self, actor: Actor[Any], rest: list[Any], exc: Exception) -> None:
        """Restart `actor` after `exc` and retry or dead-letter the message at `rest[0]`;
        quarantine it when it failed more than `intensity` times within `period`."""
        address = actor.address
        now = trio.current_time()
        failures = [t for t in (actor._failures or ()) if now - t < self.period]
        failures.append(now)
        self.restarts += 1
        log.warning("actor %s:%s crashed: %r", address[0], address[1], exc)
        pending = rest + (actor._mail or [])
        actor._running = False
        actor._mail = None
        reason = "".join(traceback.format_exception_only(exc)).strip()
        if rest:
            attempts = self._attempts.get(address, 0) + 1
            if attempts > self.max_retries:
                self._attempts.pop(address, None)
                failed = pending.pop(0)
                self._dead_letter_envelope(address, failed, f"crashed {attempts} times: {reason}")
            else:
                self._attempts[address] = attempts
        if len(failures) > self.intensity:
            self._quarantine_actor(address, pending, reason, len(failures))
            return
        fresh = type(actor)(self.context, actor.key)
        fresh._failures = failures
        fresh._mail = pending or None
        self._resident[address] = fresh
        if fresh._mail:
            fresh._running = True
            self._schedule(fresh)

    def _quarantine_actor(
        self, address: Address, pending: list[Any], reason: str, failures: int
    ) -> None:
        """Drop the actor at `address`, dead-letter its mail, and refuse its mail for a
        back-off that doubles with each quarantine in a row."""
        now = trio.current_time()
        _, streak = self._quarantine.get(address, (0.0, 0))
        backoff = min(self.quarantine_s * 2**streak, self.quarantine_max_s)
        self._quarantine[address] = (now + backoff, streak + 1)
        self.quarantined += 1
        self._attempts.pop(address, None)
        self._resident.pop(address, None)
        log.error(
            "actor %s:%s quarantined for %g s after %d failures in %g s: %s",
            address[0], address[1], backoff, failures, self.period, reason,
        )  # fmt: skip
        for envelope in pending:
            self._dead_letter_envelope(address, envelope, f"quarantined: {reason}")
        room = self._room.pop(address, None)
        if room is not None:
            room.unpark_all()  # senders waiting for room now find the quarantine

    # -- placement (several nodes on one store) ----------------------------------------

    def _send_away(self, address: Address, envelope: Any, *, moved: bool = False) -> None:
        """Hand `envelope` to the node owning `address`'s shard. When the shard `moved`
        away, mail that came from its stream is left to its next owner, which claims it;
        a durable timer's message is left to the next owner's timers."""
        assert self.remote is not None
        if moved and type(envelope) is Ask and envelope in self.remote.inbound:
            envelope.fail(ShardMoved(f"{address[0]}:{address[1]} moved to another node"))
        elif type(envelope) is TimerFire or (
            type(envelope) is Ask and type(envelope.msg) is TimerFire
        ):
            pass
        else:
            try:
                self.remote.send(address, envelope)
            except EngineError as exc:
                self._dead_letter_envelope(address, envelope, str(exc))

    def _move_away(self, actor: Actor[Any], pending: list[Any]) -> None:
        """`actor`'s shard moved while it had mail: drop it and send the mail on."""
        address = actor.address
        if self._resident.get(address) is actor:
            del self._resident[address]
        actor._running = False
        mail = pending + (actor._mail or [])
        actor._mail = None
        for envelope in mail:
            self._send_away(address, envelope, moved=True)
        room = self._room.pop(address, None)
        if room is not None:
            room.unpark_all()

    def _deliver(self, address: Address, envelope: Ask) -> None:
        """Post mail taken from this node's shard stream to its (local) actor."""
        actor = self._resident.get(address) or self._actor(address, envelope)
        if actor is not None:
            self._post(actor, envelope)

    def _shard_actors(self, shard: int) -> list[Actor[Any]]:
        assert self.placement is not None
        of = self.placement.shard
        return [a for address, a in self._resident.items() if of(address) == shard]

    def evict(self, shard: int) -> None:
        """`shard` is no longer this node's: drop its actors and send their mail on."""
        for actor in self._shard_actors(shard):
            # one in a turn finishes the message it has started; its writes are fenced
            self._move_away(actor, [])

    async def hand_over(self, shard: int, timeout: float) -> bool:
        """Passivate `shard`'s actors as each becomes idle (new mail for the shard goes
        to its stream meanwhile); False if some were still busy after `timeout` s."""
        with trio.move_on_after(timeout):
            while True:
                busy = False
                for actor in self._shard_actors(shard):
                    if actor._running or actor._mail:
                        busy = True
                    elif self._resident.get(actor.address) is actor:
                        del self._resident[actor.address]
                        if actor._active:
                            await actor.on_passivate()
                if not busy:
                    return True
                await trio.sleep(0.01)
        return False

    async def gained(self, shards: list[int]) -> None:
        """`shards` became this node's: claim their waiting mail, page in their timers."""
        assert self.remote is not None
        self.remote.gained(shards)
        self.timers.repage()

    def _dead_letter_envelope(self, address: Address, envelope: Any, reason: str) -> None:
        """Queue `envelope` (a message or an ask) as a dead letter; an asker gets
        `DeadLettered`."""
        msg = envelope
        if type(envelope) is Ask:
            msg = envelope.msg
            envelope.fail(DeadLettered(address, reason))
        if type(msg) is TimerFire:
            msg = msg.msg
        self.letters.add(address, msg, reason)

    async def _passivator(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await trio.sleep(max(self.idle_timeout / 4, 0.01))
            await self.passivate_idle()
            self._forget_quarantines()

    def _forget_quarantines(self) -> None:
        """Drop quarantines that ended longer ago than the longest back-off, so a key that
        behaves again starts from the shortest back-off next time."""
        limit = trio.current_time() - self.quarantine_max_s
        for address in [a for a, (until, _) in self._quarantine.items() if until < limit]:
            del self._quarantine[address]

    async def passivate_idle(self) -> int:
        """Drop actors idle for `idle_timeout` from memory; return how many."""
        limit = trio.current_time() - self.idle_timeout
        idle: list[Actor[Any]] = []
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
                if type(envelope) is Ask:
                    envelope.fail(EngineStopped())
        self._resident.clear()
        self._runq.clear()

    def children(self) -> list[Child]:
        """The engine's services, as supervised children (timers, dead letters, host, ...)."""
        # the host before the timers: timers already due fire as soon as the timers
        # start, and a host starting after them would drop what they delivered
        children = [
            Child("dead-letters", self.letters.run),
            Child("ask-deadlines", self.asks.run),
            Child("actor-host", self._host),
            Child("timers", self.timers.run),
            Child("passivator", self._passivator),
            Child("retention", self._retention),
        ]
        if self.placement is not None and self.remote is not None:
            children += [
                Child("remote-mail", self.remote.run),
                Child("placement", partial(self.placement.run, self)),
                Child("event-tail", self._tail_events),
            ]
        return children

    async def _tail_events(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Publish the events other nodes commit, as they land in the shared log."""
        assert self.placement is not None
        task_status.started()
        while True:
            try:
                rows = await self.placement.store.events_after(self.events.last_seq, 1000)
            except StoreError as exc:
                log.warning("reading the event log failed: %s", exc)
                await trio.sleep(0.1)
                continue
            rows = [(seq, p) for seq, p in rows if seq > self.events.last_seq]
            if rows:
                self.events.published([s for s, _ in rows], [p for _, p in rows])

    async def _stop(self) -> None:
        self._running = False
        for actor in list(self._resident.values()):
            if actor._active:
                with trio.CancelScope(shield=True):
                    await actor.on_passivate()
        self._drop_resident()


def _message(envelope: Any) -> Any:
    """The message in a mailbox entry: an ask's request, or the told message itself."""
    return envelope.msg if type(envelope) is Ask else envelope


@asynccontextmanager
async def open_engine(
    store: Store,
    actors: Iterable[type[Actor[AppT]]] = (),
    *,
    app: AppT | None = None,
    services: Iterable[Child] = (),
    **options: Any,
) -> AsyncIterator[Engine]:
    """Run an engine with its services (and `services`, started after them) under one
    `one_for_one` supervisor; actors get `app` as `ctx.app`. On exit, passivate resident
    actors and stop everything. `options` are `Engine`'s keyword arguments."""
    engine = Engine(store, app=app, **options)
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
