"""tidings' generic actor runtime: virtual actors, supervision, timers, stores, events."""

from tidings.engine.actor import Actor, Address, Forward, handler
from tidings.engine.clock import SystemClock, TrioWallClock, WallClock
from tidings.engine.errors import (
    AskTimeout,
    DeadLettered,
    EngineError,
    EngineStopped,
    MailboxFull,
    Refused,
    RestartIntensityExceeded,
    UnknownActorKind,
)
from tidings.engine.store.base import Batch, Store, StoreError
from tidings.engine.supervisor import Child, Supervisor
from tidings.engine.system import DEAD_LETTERS, DeadLetter, Engine, open_engine
from tidings.engine.timers import TimerFire, Timers

__all__ = [
    "Actor",
    "Address",
    "AskTimeout",
    "Batch",
    "Child",
    "DEAD_LETTERS",
    "DeadLetter",
    "DeadLettered",
    "Engine",
    "EngineError",
    "EngineStopped",
    "Forward",
    "MailboxFull",
    "Refused",
    "RestartIntensityExceeded",
    "Store",
    "StoreError",
    "Supervisor",
    "SystemClock",
    "TimerFire",
    "Timers",
    "TrioWallClock",
    "UnknownActorKind",
    "WallClock",
    "handler",
    "open_engine",
]
