"""Actors: addressable objects that handle one message at a time.

An actor class names its `kind`; an actor is addressed by `(kind, key)`. Its handlers are
methods marked with `@handler`, chosen by the type of the message (the annotation of
their one argument). The engine activates an actor when mail arrives for it
(`on_activate` loads its state), runs its handlers one at a time, and passivates it when
it has been idle (`on_passivate`), after which it costs no memory.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from tidings.engine.system import Engine

Address = tuple[str, str]
"""`(kind, key)`: where an actor lives."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Handler = Callable[[Any, Any], Awaitable[Any]]


def handler(fn: F) -> F:
    """Mark an `async def on_x(self, msg: SomeStruct)` method as the handler of its type."""
    fn.__tidings_handler__ = True  # type: ignore[attr-defined]
    return fn


class Forward:
    """A handler's answer that hands the message on: `msg` goes to the actor at `address`
    and, when the original was an `ask`, that actor's answer goes to the asker. The
    forwarding actor's turn ends at once (Akka's `forward`), so no worker waits."""

    __slots__ = ("address", "msg")

    def __init__(self, address: Address, msg: Any) -> None:
        self.address = address
        self.msg = msg


class Actor:
    """Base class of actors. Subclasses set `kind` and define `@handler` methods.

    Instances are made by the engine with `(engine, key)`. The runtime fields below are
    kept in slots so that an idle resident actor stays small (no task, no channel).
    """

    kind: ClassVar[str] = ""
    _handlers: ClassVar[dict[type, Handler] | None] = None

    __slots__ = ("engine", "key", "_mail", "_running", "_active", "_last", "_failures")

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine = engine
        self.key = key
        self._mail: list[Any] | None = None
        self._running = False
        self._active = False
        self._last = 0.0
        self._failures: list[float] | None = None

    @property
    def address(self) -> Address:
        """This actor's `(kind, key)`."""
        return (self.kind, self.key)

    async def on_activate(self) -> None:
        """Load state before the first message after activation or restart."""

    async def on_passivate(self) -> None:
        """Called before the actor is dropped from memory after being idle."""

    @classmethod
    def handlers(cls) -> dict[type, Handler]:
        """The handler of each message type, resolved once per class."""
        found = cls.__dict__.get("_handlers")
        if found is None:
            found = {}
            for klass in reversed(cls.__mro__):
                for fn in vars(klass).values():
                    if getattr(fn, "__tidings_handler__", False):
                        hints = typing.get_type_hints(fn)
                        hints.pop("return", None)
                        if len(hints) != 1:
                            raise TypeError(
                                f"{fn.__qualname__}: a handler takes one annotated message"
                            )
                        (msg_type,) = hints.values()
                        found[msg_type] = fn
            cls._handlers = found
        return found
