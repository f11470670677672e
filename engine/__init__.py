"""tidings' generic actor runtime: virtual actors, supervision, timers, stores, events."""

from engine.actor import Actor, Address, Forward, handler
from engine.clock import SystemClock, TrioWallClock, WallClock
from engine.errors import (
    AskTimeout,
    DeadLettered,
    EngineError,
    EngineStopped,
    MailboxFull,
    Refused,
    RestartIntensityExceeded,
    UnknownActorKind,
)
from engine.store.base import Batch, Store, StoreError
from engine.supervisor import Child, Supervisor
from engine.system import DEAD_LETTERS, DeadLetter, Engine, open_engine
from engine.timers import TimerFire, Timers

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
