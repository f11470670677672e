"""Supervisors for long-running services, with Erlang/OTP semantics.

A `Supervisor` starts its children in order and watches them. When one exits it decides,
by the child's restart type, whether to restart it:

- `permanent`: always; `transient`: only after an abnormal exit (an exception);
  `temporary`: never.

and, by the supervisor's strategy, what to restart with it:

- `one_for_one`: only that child; `one_for_all`: every child (the others are stopped
  first, in reverse start order); `rest_for_one`: that child and those started after it.

More than `intensity` restarts within `period` seconds and the supervisor gives up: it
stops all its children and raises `RestartIntensityExceeded` to its own parent.

Stopping a child: a child declared `graceful` is handed a `stopping` event and given
`shutdown` seconds to return after it is set; then (or at once, for other children) its
cancel scope is cancelled.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from tidings.engine.errors import RestartIntensityExceeded

log = logging.getLogger("tidings.supervisor")

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]


@dataclass(slots=True)
class Child:
    """A supervised service: `start(task_status=...)` (and `stopping=` when `graceful`)
    runs it, calling `task_status.started()` once it is ready to serve."""

    name: str
    start: Callable[..., Awaitable[Any]]
    restart: Restart = "permanent"
    shutdown: float = 5.0
    graceful: bool = False


@dataclass(slots=True)
class _Running:
    # shielded: a child is stopped only by its supervisor, in order, with its shutdown time
    scope: trio.CancelScope = field(default_factory=lambda: trio.CancelScope(shield=True))
    done: trio.Event = field(default_factory=trio.Event)
    stopping: trio.Event = field(default_factory=trio.Event)
    stopped_by_us: bool = False


class Supervisor:
    """Runs `children` under `strategy`; see the module docstring for the semantics."""

    def __init__(
        self,
        children: list[Child],
        *,
        strategy: Strategy = "one_for_one",
        intensity: int = 3,
        period: float = 5.0,
        name: str = "supervisor",
    ) -> None:
        self.children = children
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.name = name
        self.restarts = 0
        self._running: list[_Running | None] = [None] * len(children)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every child, then supervise until cancelled or escalation."""
        send, exits = trio.open_memory_channel[tuple[int, _Running, BaseException | None]](math.inf)
        history: deque[float] = deque()
        async with trio.open_nursery() as nursery:
            try:
                for i in range(len(self.children)):
                    await self._start(nursery, i, send)
                task_status.started()
                while any(self._running):
                    i, run, error = await exits.receive()
                    if self._running[i] is not run or run.stopped_by_us:
                        continue
                    self._running[i] = None
                    child = self.children[i]
                    if error is not None:
                        log.warning("%s: child %s failed: %r", self.name, child.name, error)
                    if child.restart == "temporary" or (
                        child.restart == "transient" and error is None
                    ):
                        continue
                    now = trio.current_time()
                    history.append(now)
                    while history and now - history[0] > self.period:
                        history.popleft()
                    if len(history) > self.intensity:
                        raise RestartIntensityExceeded(
                            f"{self.name}: {len(history)} restarts in {self.period:g} s "
                            f"(last: {child.name})"
                        ) from error
                    self.restarts += 1
                    group = self._group(i)
                    for j in reversed(group):
                        if j != i:
                            await self._stop(j)
                    for j in group:
                        await self._start(nursery, j, send)
            finally:
                with trio.CancelScope(shield=True):
                    for j in reversed(range(len(self.children))):
                        await self._stop(j)

    def _group(self, i: int) -> list[int]:
        if self.strategy == "one_for_all":
            return list(range(len(self.children)))
        if self.strategy == "rest_for_one":
            return list(range(i, len(self.children)))
        return [i]

    async def _start(
        self,
        nursery: trio.Nursery,
        i: int,
        send: trio.MemorySendChannel[tuple[int, _Running, BaseException | None]],
    ) -> None:
        run = _Running()
        self._running[i] = run
        # Shielded: under a cancelled scope trio's `started()` quietly leaves the child
        # where it is, and a child that ignores cancellation (ours are shielded until
        # their supervisor stops them) would then never let `start` return.
        with trio.CancelScope(shield=True):
            await nursery.start(self._supervise, i, run, send)

    async def _supervise(
        self,
        i: int,
        run: _Running,
        send: trio.MemorySendChannel[tuple[int, _Running, BaseException | None]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        child = self.children[i]
        error: BaseException | None = None
        kwargs: dict[str, Any] = {"stopping": run.stopping} if child.graceful else {}
        started = False

        class _Status:
            def started(self, value: Any = None) -> None:
                nonlocal started
                started = True
                task_status.started()

        try:
            with run.scope:
                try:
                    await child.start(task_status=_Status(), **kwargs)
                except Exception as exc:
                    if not started:
                        raise  # a child that cannot start fails its supervisor, as in OTP
                    error = exc
            if not started:
                task_status.started()
        finally:
            run.done.set()
        send.send_nowait((i, run, error))

    async def _stop(self, i: int) -> None:
        run = self._running[i]
        if run is None:
            return
        run.stopped_by_us = True
        child = self.children[i]
        if child.graceful and child.shutdown > 0:
            run.stopping.set()
            with trio.move_on_after(child.shutdown):
                await run.done.wait()
        run.scope.cancel()
        await run.done.wait()
        self._running[i] = None
