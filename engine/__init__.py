"""tidings' generic actor runtime: virtual actors, contained failures, timers, stores,
events.

- `messages`: addresses and `Request[R]`, the messages that declare their answer's type;
- `context`: `ActorContext[AppT]`, the engine as an actor sees it;
- `actor`: `Actor` and `StatefulActor`, `@handler`, `Forward`;
- `system`: `Engine` and `open_engine` (mailboxes, turns, restarts, quarantine, commit);
- `asks`, `deadletters`, `timers`, `eventlog`, `retention`, `supervisor`, `clock`: its
  services;
- `store`: the storage backends behind the `Store` protocol.

Modules are layered without cycles: messages, errors, clock and store below; timers,
asks, dead letters above them; the context above timers; actors above the context; the
engine on top.
"""

from tidings.engine.actor import Actor, Forward, StatefulActor, handler
from tidings.engine.clock import SystemClock, TrioWallClock, WallClock
from tidings.engine.context import ActorContext
from tidings.engine.deadletters import DEAD_LETTERS, DeadLetter
from tidings.engine.errors import (
    AnswerLost,
    AskTimeout,
    DeadLettered,
    EngineError,
    EngineStopped,
    MailboxFull,
    Refused,
    RestartIntensityExceeded,
    UnknownActorKind,
)
from tidings.engine.messages import Address, Request
from tidings.engine.retention import expire_at
from tidings.engine.store.base import Batch, Claimed, Store, StoreError
from tidings.engine.supervisor import Child, Supervisor
from tidings.engine.system import Engine, open_engine
from tidings.engine.timers import TimerFire, Timers

__all__ = [
    "Actor",
    "ActorContext",
    "Address",
    "AnswerLost",
    "AskTimeout",
    "Batch",
    "Child",
    "Claimed",
    "DEAD_LETTERS",
    "DeadLetter",
    "DeadLettered",
    "Engine",
    "EngineError",
    "EngineStopped",
    "Forward",
    "MailboxFull",
    "Refused",
    "Request",
    "RestartIntensityExceeded",
    "StatefulActor",
    "Store",
    "StoreError",
    "Supervisor",
    "SystemClock",
    "TimerFire",
    "Timers",
    "TrioWallClock",
    "UnknownActorKind",
    "WallClock",
    "expire_at",
    "handler",
    "open_engine",
]
