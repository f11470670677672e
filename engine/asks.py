"""Asks: the envelope of a message that wants a reply, and the one task that enforces
every ask's deadline.

An `Ask` travels through mailboxes in place of its message; the handler's answer (or
error) is put on it with `answer` / `fail`, which wake its one waiter. It is its own
completion: a `trio.Event` (with its parking lot and ordered dict) and the coroutines of
waiting on it were a tenth of the allocations of an inbound message, and every
allocation brings the garbage collector's next pass nearer. Deadlines are kept on one heap swept by one
task: a cancel scope per ask cost a fifth of the server's CPU under chat load (py-spy).
Answered asks stay on the heap until their deadline and are dropped in bulk once the
heap grows past `compaction` entries (and twice the asks still pending). The default is
small: each answered ask keeps its message, its answer and their objects alive, and at
100,000 the inbound pipeline kept ~345,000 objects for the garbage collector to scan
again and again (~13 per message); at 4,096 it is ~170,000, most of them the memory
store's own data.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import trio

from tidings.engine.errors import AskTimeout
from tidings.engine.messages import Address


class Ask:
    """A message that wants a reply; `done` once answered with `value` or `error` (the
    first answer counts: a handler finishing after the deadline changes nothing)."""

    __slots__ = ("msg", "done", "value", "error", "_waiter")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self._waiter: trio.lowlevel.Task | None = None

    def answer(self, value: Any, error: BaseException | None = None) -> None:
        """Answer with `value` (or `error`), unless already answered; wake the waiter."""
        if self.done:
            return
        self.value, self.error, self.done = value, error, True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def fail(self, error: BaseException) -> None:
        """Answer with `error`."""
        self.answer(None, error)

    async def wait(self) -> None:
        """Wait until answered (one task at a time may wait)."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        if self._waiter is not None:
            raise RuntimeError("an ask has one waiter")
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


class AskDeadlines:
    """The deadlines of pending asks, failed with `AskTimeout` by `run` when they pass."""

    def __init__(self, compaction: int = 4_096) -> None:
        self.compaction = compaction
        # (deadline, seq, request, address, timeout)
        self._heap: list[tuple[float, int, Ask, Address, float]] = []
        self._next = math.inf
        self._compact_at = compaction
        self._lot = trio.lowlevel.ParkingLot()
        self._seq = 0

    def add(self, request: Ask, address: Address, timeout: float) -> None:
        """Fail `request` with `AskTimeout` unless it is answered within `timeout` s."""
        deadline = trio.current_time() + timeout
        self._seq += 1
        heap = self._heap
        if len(heap) >= self._compact_at:
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)
            self._compact_at = max(self.compaction, 2 * len(heap))
        heapq.heappush(heap, (deadline, self._seq, request, address, timeout))
        if deadline < self._next:
            self._lot.unpark_all()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sweeper service: fail asks whose deadline passed."""
        task_status.started()
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, request, address, timeout = heapq.heappop(heap)
                if not request.done:
                    request.fail(AskTimeout(address, timeout))
            self._next = heap[0][0] if heap else math.inf
            with trio.move_on_at(self._next):
                await self._lot.park()
