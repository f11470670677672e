"""Typed errors of the actor engine: what a caller of `tell` or `ask` can see."""

from __future__ import annotations


class EngineError(Exception):
    """Base of the engine's errors."""


class Refused(EngineError):
    """Raised by a handler to refuse a request: an answer, not a crash. The asker gets it;
    the actor is not restarted and the message is not retried."""


class MailboxFull(EngineError):
    """`tell_nowait` found the actor's mailbox at its bound; use `tell` to wait for room."""

    def __init__(self, address: tuple[str, str], size: int) -> None:
        super().__init__(f"mailbox of {address[0]}:{address[1]} is full ({size} messages)")
        self.address = address


class AskTimeout(EngineError):
    """`ask` got no reply within its deadline."""

    def __init__(self, address: tuple[str, str], timeout: float) -> None:
        super().__init__(f"{address[0]}:{address[1]} did not reply within {timeout:g} s")
        self.address = address


class EngineStopped(EngineError):
    """The engine is not running (not started yet, or shut down)."""

    def __init__(self) -> None:
        super().__init__("the engine is not running")


class UnknownActorKind(EngineError):
    """No actor class is registered for an address's kind."""


class DeadLettered(EngineError):
    """The message could not be handled (no handler, it kept crashing its actor, or its
    actor is quarantined) and was written to the dead-letter log; `reason` says why."""

    def __init__(self, address: tuple[str, str], reason: str) -> None:
        super().__init__(f"{address[0]}:{address[1]}: {reason}")
        self.address = address
        self.reason = reason


class AnswerLost(EngineError):
    """Another node handled the ask (its turn committed) but stopped before answering;
    asking again is safe for a request that is idempotent (e.g. an inbound SMS by sid)."""


class RestartIntensityExceeded(EngineError):
    """More restarts than a supervisor's intensity allows within its period: escalated."""
