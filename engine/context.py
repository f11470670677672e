"""`ActorContext`: everything an actor may use of the engine that runs it.

An actor gets its context at construction (`Actor(ctx, key)`) instead of the engine: the
store to read from, the wall clock, the timer service, `tell`/`ask` to reach other actors,
`commit` to write, and `app`, the typed domain context of the layer that runs the engine
(e.g. the inbox's settings and outbox). Every actor of an engine shares one context.

The context is built from the engine's bound methods, so calling through it costs what
calling the engine costs, and this module needs no import of the engine (no cycle).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from tidings.engine.clock import WallClock
from tidings.engine.messages import Address, Request
from tidings.engine.store.base import Batch, Store
from tidings.engine.timers import Timers

AppT = TypeVar("AppT")
R = TypeVar("R")


class AskFn(Protocol):
    """`ask(address, request, timeout=10.0)`: the typed answer of `request`."""

    def __call__(self, address: Address, msg: Request[R], timeout: float = ...) -> Awaitable[R]: ...


class Runtime(Protocol):
    """What the context takes from the engine (the `Engine` provides it)."""

    store: Store
    clock: WallClock
    timers: Timers

    def tell_nowait(self, address: Address, msg: Any) -> None: ...

    async def tell(self, address: Address, msg: Any) -> None: ...

    async def ask(self, address: Address, msg: Request[R], timeout: float = 10.0) -> R: ...

    async def commit(self, batch: Batch) -> list[int]: ...

    def owns(self, address: Address) -> bool: ...

    def announce(self, payload: bytes) -> None: ...


class ActorContext(Generic[AppT]):
    """The engine as an actor sees it, and the domain context `app` of type `AppT`.

    - `store`: reads (writes go through `commit`); `clock`/`now()`: wall-clock time;
    - `timers`: volatile and durable keyed timers;
    - `tell_nowait`/`tell`/`ask`: messages to other actors (`ask` is typed by `Request[R]`);
    - `commit(batch)`: the one commit path of the engine (`Engine.commit`);
    - `owns(address)`: whether that actor runs on this node (always, on a single node);
    - `announce(payload)`: a live-only event, pushed to the subscribers connected now and
      never stored (`Engine.announce`).
    """

    __slots__ = (
        "store", "clock", "timers", "tell_nowait", "tell", "ask", "commit", "owns", "announce",
        "app",
    )  # fmt: skip

    def __init__(self, runtime: Runtime, app: AppT) -> None:
        self.store: Store = runtime.store
        self.clock: WallClock = runtime.clock
        self.timers: Timers = runtime.timers
        self.tell_nowait: Callable[[Address, Any], None] = runtime.tell_nowait
        self.tell: Callable[[Address, Any], Awaitable[None]] = runtime.tell
        self.ask: AskFn = runtime.ask
        self.commit: Callable[[Batch], Awaitable[list[int]]] = runtime.commit
        self.owns: Callable[[Address], bool] = runtime.owns
        self.announce: Callable[[bytes], None] = runtime.announce
        self.app: AppT = app

    def now(self) -> float:
        """Wall-clock time, epoch seconds."""
        return self.clock.now()
