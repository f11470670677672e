"""tidings: a real-time messaging engine for customer support, an actor system on trio.

This module is the public face for a host program. The inbox (tickets, profiles, web chat)
is `open_inbox` and `Inbox`; the generic actor runtime underneath is the rest of these
names, usable without the inbox. The layers live in `tidings.engine` (runtime),
`tidings.actors` (inbox domain), `tidings.transports` (HTTP, WebSocket, CLI) and
`tidings.bench` (benchmarks); each imports only the ones before it.
"""

from tidings.actors.brand import Account, Timing
from tidings.actors.errors import InboxError
from tidings.actors.inbox import Inbox, open_inbox
from tidings.engine import (
    Actor,
    ActorContext,
    Address,
    AskTimeout,
    Batch,
    Child,
    DeadLettered,
    Engine,
    EngineError,
    EngineStopped,
    Forward,
    MailboxFull,
    Refused,
    Request,
    RestartIntensityExceeded,
    StatefulActor,
    Store,
    StoreError,
    Supervisor,
    SystemClock,
    TrioWallClock,
    UnknownActorKind,
    WallClock,
    handler,
    open_engine,
)
from tidings.engine.store import open_store
from tidings.engine.store.memory import MemoryStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

__version__ = "0.1.0"

__all__ = [
    "Account",
    "Actor",
    "ActorContext",
    "Address",
    "AskTimeout",
    "Batch",
    "Child",
    "DeadLettered",
    "Engine",
    "EngineError",
    "EngineStopped",
    "Forward",
    "Inbox",
    "InboxError",
    "MailboxFull",
    "MemoryStore",
    "OutboxMail",
    "OutboxSms",
    "Refused",
    "Request",
    "RestartIntensityExceeded",
    "StatefulActor",
    "Store",
    "StoreError",
    "Supervisor",
    "SystemClock",
    "Timing",
    "TrioWallClock",
    "UnknownActorKind",
    "WallClock",
    "__version__",
    "handler",
    "open_engine",
    "open_inbox",
    "open_store",
]
