"""Wall-clock time for the engine, injectable so that tests drive it with trio's clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

import trio


class WallClock(Protocol):
    """The source of wall-clock time (seconds since the epoch, UTC)."""

    def now(self) -> float: ...


class SystemClock:
    """The machine's real time."""

    def now(self) -> float:
        return time.time()


class TrioWallClock:
    """Wall time that advances with trio's clock, from `start` (epoch seconds).

    Under `trio.testing.MockClock` this makes hours of wall time pass instantly, so
    durable timers, snoozes and follow-ups can be tested without sleeping.
    """

    def __init__(self, start: float) -> None:
        self._start = start
        self._trio_start = trio.current_time()

    def now(self) -> float:
        return self._start + (trio.current_time() - self._trio_start)


def to_datetime(epoch: float) -> datetime:
    """An aware UTC datetime for epoch seconds."""
    return datetime.fromtimestamp(epoch, UTC)
