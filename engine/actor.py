"""Actors: addressable objects that handle one message at a time.

An actor class names its `kind`; an actor is addressed by `(kind, key)`. Its handlers are
methods marked with `@handler`, chosen by the type of the message (the annotation of
their one argument). The engine makes an actor with its `ActorContext` and key when mail
arrives for it, activates it before its first message (`on_activate`), runs its handlers
one at a time, and passivates it when it has been idle (`on_passivate`), after which it
costs no memory.

`StatefulActor` adds a durable state: a msgspec Struct loaded from the store in a
lifecycle stage of its own, before `on_activate` and the first handler (as Orleans loads
grain state), and written back with `put_state(batch)` / `save(batch)` through the
context's one commit path.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from tidings.engine.context import ActorContext
from tidings.engine.messages import Address
from tidings.engine.store.base import Batch

AppT = TypeVar("AppT")
S = TypeVar("S", bound=msgspec.Struct)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Handler = Callable[[Any, Any], Awaitable[Any]]

_encode = msgspec.json.Encoder().encode


def handler(fn: F) -> F:
    """Mark an `async def on_x(self, msg: SomeStruct)` method as the handler of its type.

    A method whose one argument is a list, `async def on_xs(self, msgs: list[SomeStruct])`,
    is that type's *drain*: when several messages of the type wait in a row, the engine
    hands them to it in one call (at most `Engine.drain_max`), so that it can handle them
    in one commit. It handles a prefix of them, durably, and returns one answer per message
    it handled, in order (a `Refused` answer is the error that message's asker gets); the
    engine hands the rest to the one-message handler, all of them when it returns an
    empty list. A drain needs the one-message handler of its type beside it."""
    setattr(fn, "__tidings_handler__", True)  # noqa: B010 (a function attribute mypy knows not)
    return fn


class Forward:
    """A handler's answer that hands the message on: `msg` goes to the actor at `address`
    and, when the original was an `ask`, that actor's answer goes to the asker. The
    forwarding actor's turn ends at once (Akka's `forward`), so no worker waits."""

    __slots__ = ("address", "msg")

    def __init__(self, address: Address, msg: Any) -> None:
        self.address = address
        self.msg = msg


class Actor(Generic[AppT]):
    """Base class of actors. Subclasses set `kind` and define `@handler` methods.

    Instances are made by the engine with `(ctx, key)`. The runtime fields below are kept
    in slots so that an idle resident actor stays small (no task, no channel).
    """

    kind: ClassVar[str] = ""
    _handlers: ClassVar[dict[type, Handler] | None] = None
    _drains: ClassVar[dict[type, Handler] | None] = None

    __slots__ = ("ctx", "key", "_mail", "_running", "_active", "_last", "_failures", "_token")

    def __init__(self, ctx: ActorContext[AppT], key: str) -> None:
        self.ctx = ctx
        self.key = key
        self._mail: list[Any] | None = None
        self._running = False
        self._active = False
        self._last = 0.0
        self._failures: list[float] | None = None
        self._token: tuple[int, int] | None = None  # fencing token when placed (placement)

    @property
    def address(self) -> Address:
        """This actor's `(kind, key)`."""
        return (self.kind, self.key)

    async def _activate(self) -> None:
        """The activation stages, run by the engine before the first message."""
        await self.on_activate()

    async def on_activate(self) -> None:
        """Prepare before the first message after activation or restart."""

    async def on_passivate(self) -> None:
        """Called before the actor is dropped from memory after being idle."""

    @classmethod
    def handlers(cls) -> dict[type, Handler]:
        """The handler of each message type, resolved once per class."""
        found: dict[type, Handler] | None = cls.__dict__.get("_handlers")
        if found is None:
            found = cls._resolve()
        return found

    @classmethod
    def drains(cls) -> dict[type, Handler]:
        """The drain of each message type that has one (see `handler`)."""
        found: dict[type, Handler] | None = cls.__dict__.get("_drains")
        if found is None:
            cls._resolve()
            found = cls.__dict__["_drains"]
        return found

    @classmethod
    def _resolve(cls) -> dict[type, Handler]:
        handlers: dict[type, Handler] = {}
        drains: dict[type, Handler] = {}
        for klass in reversed(cls.__mro__):
            for fn in vars(klass).values():
                if getattr(fn, "__tidings_handler__", False):
                    hints = typing.get_type_hints(fn)
                    hints.pop("return", None)
                    if len(hints) != 1:
                        raise TypeError(f"{fn.__qualname__}: a handler takes one annotated message")
                    (msg_type,) = hints.values()
                    if typing.get_origin(msg_type) is list:
                        (msg_type,) = typing.get_args(msg_type)
                        drains[msg_type] = fn
                    else:
                        handlers[msg_type] = fn
        for msg_type, fn in drains.items():
            if msg_type not in handlers:
                raise TypeError(f"{fn.__qualname__}: a drain needs a handler of {msg_type}")
        cls._handlers = handlers
        cls._drains = drains
        return handlers


class StatefulActor(Actor[AppT], Generic[AppT, S]):
    """An actor with a durable state of type `state_type` (a msgspec Struct), kept at
    `state_key()`. `state` is loaded before `on_activate`; it is None when nothing is
    stored. Write it with `put_state(batch)` (into a batch the actor commits) or
    `save(batch)` (which also commits)."""

    state_type: type[S]
    _state_decoder: ClassVar[msgspec.json.Decoder[Any] | None] = None

    __slots__ = ("state",)

    def __init__(self, ctx: ActorContext[AppT], key: str) -> None:
        super().__init__(ctx, key)
        self.state: S | None = None

    def state_key(self) -> str:
        """Where the state is stored: `"{kind}:{key}"` unless a subclass says otherwise."""
        return f"{self.kind}:{self.key}"

    async def _activate(self) -> None:
        await self.reload_state()
        await self.on_activate()

    async def reload_state(self) -> None:
        """Read the state back from the store (None when nothing is stored): after a
        refused commit, the state as it was before the turn changed it."""
        raw = await self.ctx.store.get(self.state_key())
        if raw is None:
            self.state = None
            return
        cls = type(self)
        decoder = cls.__dict__.get("_state_decoder")
        if decoder is None:
            decoder = msgspec.json.Decoder(cls.state_type)
            cls._state_decoder = decoder
        self.state = decoder.decode(raw)

    def put_state(self, batch: Batch) -> None:
        """Add the current state to `batch` (nothing when there is none)."""
        if self.state is not None:
            batch.put(self.state_key(), _encode(self.state))

    async def save(self, batch: Batch | None = None) -> list[int]:
        """Commit `batch` (or an empty one) with the current state in it."""
        batch = batch if batch is not None else Batch()
        self.put_state(batch)
        return await self.ctx.commit(batch)
