"""One timer service per engine: keyed timers on a heap, volatile or durable.

A timer delivers a message to an actor when it is due. Timers have keys: setting a key
again replaces its timer (that is how a debounce is written) and a key can be cancelled.

- *Volatile* timers live in memory only, on trio's clock.
- *Durable* timers (reminders) are written to the store with an absolute wall-clock due
  time, inside the batch of the actor turn that sets them, so they are exactly as durable
  as the state change they belong to. The service pages them in by due time, a window
  ahead (never all at start-up), and when one fires it is delivered as a `TimerFire`; after
  the actor has handled it the store entry is deleted, unless the handler set the key
  again. A crash between the two can deliver it again, so handlers of durable timers check
  their state (a snooze wakes only a ticket still snoozed until that time).

Cancelled and replaced timers are dropped lazily when they reach the top of the heap.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from tidings.engine.clock import WallClock
from tidings.engine.errors import EngineError, MailboxFull
from tidings.engine.messages import Address, struct_tag
from tidings.engine.store.base import Batch, Store


class _Timer(msgspec.Struct, gc=False):
    """One pending volatile timer on the heap: due (trio time), key, target and message.

    A million of them may be pending, so it is a struct the garbage collector does not
    track (48 bytes; a slotted class with a wall-clock slot was 72). That is safe because
    nothing refers back to a timer: only the heap and the key map hold it, so it is never
    part of a reference cycle."""

    due: float
    key: str
    address: Address
    msg: Any

    def __lt__(self, other: _Timer) -> bool:
        return (self.due, self.key) < (other.due, other.key)


class _Durable(_Timer, gc=False):
    """A durable timer in memory: also its wall-clock due, as stored."""

    wall: float


def _wall(entry: _Timer) -> float | None:
    """The wall-clock due of a durable timer; None for a volatile one."""
    return entry.wall if type(entry) is _Durable else None


class TimerFire:
    """The envelope of a durable timer's message, so the engine can delete the timer once
    the message has been handled."""

    __slots__ = ("key", "due", "msg")

    def __init__(self, key: str, due: float, msg: Any) -> None:
        self.key = key
        self.due = due
        self.msg = msg


class Timers:
    """The engine's timer service. Use `after`/`cancel` for volatile timers and
    `set_durable`/`cancel_durable` (inside a turn's batch) for durable ones."""

    def __init__(
        self,
        store: Store,
        clock: WallClock,
        *,
        commit: Callable[[Batch], Awaitable[Any]],
        deliver: Callable[[Address, Any], None],
        dead_letter: Callable[[Address, Any, str], None],
        window: float = 60.0,
        page: int = 10_000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._commit = commit
        self._deliver = deliver  # the engine's tell_nowait
        self._dead_letter = dead_letter
        self.window = window
        self.page = page
        self._heap: list[_Timer] = []
        self._by_key: dict[str, _Timer] = {}
        self._types: dict[str, type[Any]] = {}  # tag → message type
        self._in_flight: set[str] = set()
        self._horizon = -math.inf  # durable timers due up to here are in memory
        self._wake_at = math.inf
        self._lot = trio.lowlevel.ParkingLot()
        self.fired_count = 0
        # when nodes share the store: whether an actor runs here; durable timers of other
        # nodes' actors are left to them, so each fires once, on its shard's owner
        self.owns: Callable[[Address], bool] | None = None

    def know(self, msg_type: type[Any]) -> None:
        """Let durable timers carry `msg_type`, if it is a Struct with a tag (handlers'
        message types are made known by `Engine.register`)."""
        tag = struct_tag(msg_type)
        if tag is not None:
            known = self._types.setdefault(tag, msg_type)
            if known is not msg_type:
                raise EngineError(
                    f"durable timer tag {tag!r} names both {known.__qualname__} "
                    f"and {msg_type.__qualname__}"
                )

    @property
    def pending(self) -> int:
        """Timers set and not yet fired or cancelled (durable ones: those paged in)."""
        return len(self._by_key)

    # -- volatile -----------------------------------------------------------------------

    def after(self, key: str, delay: float, address: Address, msg: Any) -> None:
        """Deliver `msg` to `address` in `delay` seconds (trio time), replacing timer `key`.

        A pending timer costs its key, its message and 111 bytes of the engine's; a
        message that holds only scalars is best a `msgspec.Struct` with `gc=False`."""
        self._push(trio.current_time() + delay, key, address, None, msg)

    def cancel(self, key: str) -> None:
        """Forget timer `key` (volatile, or the in-memory copy of a durable one)."""
        self._by_key.pop(key, None)

    # -- durable ------------------------------------------------------------------------

    def set_durable(self, batch: Batch, key: str, due: float, address: Address, msg: Any) -> None:
        """Add durable timer `key` (due at wall time `due`) to `batch`, replacing the old."""
        tag = struct_tag(type(msg))
        if tag is None:
            raise EngineError(
                f"durable timer message {type(msg).__qualname__} needs a msgspec Struct tag "
                '(e.g. `class Wake(msgspec.Struct, tag="ticket.wake")`)'
            )
        if self._types.get(tag) is not type(msg):
            raise EngineError(f"durable timer message {tag!r} is not a handled message type")
        payload = msgspec.msgpack.encode((address[0], address[1], tag, msg))
        batch.set_timer(key, due, payload)
        if due <= self._horizon:
            self._push(self._to_trio(due), key, address, due, msg)
        else:
            self._by_key.pop(key, None)

    def cancel_durable(self, batch: Batch, key: str) -> None:
        """Add the cancelling of durable timer `key` to `batch`."""
        batch.cancel_timer(key)
        self._by_key.pop(key, None)

    async def fired(self, fire: TimerFire) -> None:
        """The message of durable timer `fire` was handled: delete it from the store."""
        self._in_flight.discard(fire.key)
        if fire.key in self._by_key:
            return  # the handler set the key again
        batch = Batch()
        batch.cancel_timer(fire.key)
        await self._commit(batch)

    def repage(self) -> None:
        """Read the durable timers again (this node took shards: theirs are due here)."""
        self._horizon = -math.inf
        self._lot.unpark_all()

    # -- the service ----------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire timers as they fall due; page durable timers in a window ahead."""
        self._horizon = -math.inf
        self._in_flight.clear()
        await self._page_in()
        task_status.started()
        heap = self._heap
        while True:
            now = trio.current_time()
            fired = 0
            while heap and heap[0].due <= now:
                entry = heapq.heappop(heap)
                key = entry.key
                if self._by_key.get(key) is entry:
                    del self._by_key[key]
                    self._fire(entry)
                    fired += 1
                    if fired % 1000 == 0:
                        await trio.lowlevel.checkpoint()
            wall = self._clock.now()
            if wall >= self._horizon - self.window / 2:
                await self._page_in()
                wall = self._clock.now()
            now = trio.current_time()
            page_at = now + max(self._horizon - self.window / 2 - wall, 0.0)
            self._wake_at = min(heap[0].due if heap else math.inf, page_at)
            with trio.move_on_at(self._wake_at):
                await self._lot.park()

    def _to_trio(self, wall_due: float) -> float:
        return trio.current_time() + (wall_due - self._clock.now())

    def _push(self, due: float, key: str, address: Address, wall: float | None, msg: Any) -> None:
        old = self._by_key.get(key)
        if old is not None and old.due == due and (wall is None) is (type(old) is _Timer):
            old.address, old.msg = address, msg  # same place in heap
            if isinstance(old, _Durable) and wall is not None:
                old.wall = wall
            return
        entry = (
            _Timer(due, key, address, msg)
            if wall is None
            else _Durable(due, key, address, msg, wall)
        )
        self._by_key[key] = entry
        heapq.heappush(self._heap, entry)
        if due < self._wake_at:
            self._wake_at = due
            self._lot.unpark_all()

    def _fire(self, entry: _Timer) -> None:
        address = entry.address
        wall = _wall(entry)
        if wall is not None and self.owns is not None and not self.owns(address):
            return  # its shard moved to another node, whose timers fire it
        msg = entry.msg if wall is None else TimerFire(entry.key, wall, entry.msg)
        if wall is not None:
            self._in_flight.add(entry.key)
        try:
            self._deliver(address, msg)
            self.fired_count += 1
        except MailboxFull:
            # try again shortly rather than block every other timer behind one actor
            self._in_flight.discard(entry.key)
            self._push(trio.current_time() + 0.01, entry.key, address, wall, entry.msg)

    async def _page_in(self) -> None:
        now = self._clock.now()
        until = now + self.window
        due = await self._store.due_timers(until, self.page)
        undecodable = Batch()
        for timer in due:
            if timer.key in self._in_flight:
                continue
            known = self._by_key.get(timer.key)
            if known is not None and _wall(known) == timer.due:
                continue
            try:
                kind, key, tag, raw = _decode_envelope(timer.payload)
                if self.owns is not None and not self.owns((kind, key)):
                    continue
                msg_type = self._types.get(tag)
                if msg_type is None:
                    raise EngineError(f"no message type has the tag {tag!r}")
                msg: Any = msgspec.msgpack.decode(raw, type=msg_type)
            except (msgspec.DecodeError, EngineError) as exc:
                # skipping it would page it in again on every round, forever
                self._dead_letter(("timer", timer.key), timer.payload, f"undecodable timer: {exc}")
                undecodable.cancel_timer(timer.key)
                self._by_key.pop(timer.key, None)
                continue
            self._push(self._to_trio(timer.due), timer.key, (kind, key), timer.due, msg)
        if undecodable.timer_deletes:
            await self._commit(undecodable)
        self._horizon = due[-1].due - 1e-6 if len(due) == self.page else until


_decode_envelope = msgspec.msgpack.Decoder(tuple[str, str, str, msgspec.Raw]).decode
