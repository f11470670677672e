"""Dead letters: messages the engine gave up on, written to the `deadletters` log, which
keeps the newest `keep` (10,000 by default; the writer trims it after each write).

A message is dead-lettered when no handler takes it, when it kept crashing its actor
(`max_retries`), when its actor is quarantined, or when a durable timer's payload cannot
be decoded. `add` only queues the letter (it is called from synchronous code on the
actor paths); the writer service commits the queue through the engine's one commit path.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from tidings.engine.clock import WallClock
from tidings.engine.messages import Address
from tidings.engine.store.base import Batch, Store

log = logging.getLogger("tidings.engine")

DEAD_LETTERS = "deadletters"
WRITE_AT_ONCE = 500  # letters per commit when many come at once (a quarantine)


class DeadLetter(msgspec.Struct, frozen=True):
    """A message that could not be handled, as written to the dead-letter log."""

    kind: str
    key: str
    message_type: str
    message: str
    reason: str
    at: float


class DeadLetters:
    """The dead-letter queue and its writer; `count` is how many were written, `keep`
    how many the log holds at most (the newest)."""

    def __init__(
        self,
        commit: Callable[[Batch], Awaitable[Any]],
        clock: WallClock,
        store: Store,
        *,
        keep: int = 10_000,
    ) -> None:
        self._commit = commit
        self._clock = clock
        self._store = store
        self.keep = keep
        self._queue: deque[tuple[Address, Any, str]] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self.count = 0

    def add(self, address: Address, msg: Any, reason: str) -> None:
        """Queue `msg`, meant for `address`, as a dead letter with `reason`."""
        self._queue.append((address, msg, reason))
        self._lot.unpark()

    async def write(self, address: Address, msg: Any, reason: str) -> None:
        """Write one dead letter now."""
        await self._write([(address, msg, reason)])
        await self._store.trim_log(DEAD_LETTERS, self.keep)

    def _letter(self, address: Address, msg: Any, reason: str) -> bytes:
        try:
            body = msgspec.json.encode(msg).decode()
        except (TypeError, msgspec.EncodeError, UnicodeDecodeError):
            body = repr(msg)
        letter = DeadLetter(
            address[0], address[1], type(msg).__name__, body, reason, self._clock.now()
        )
        return msgspec.json.encode(letter)

    async def _write(self, letters: list[tuple[Address, Any, str]]) -> None:
        batch = Batch()
        for address, msg, reason in letters:
            batch.append(DEAD_LETTERS, self._letter(address, msg, reason))
            log.error("dead letter for %s:%s: %s", address[0], address[1], reason)
        await self._commit(batch)
        self.count += len(letters)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer service: write queued letters as they come, many to a commit."""
        task_status.started()
        queue = self._queue
        while True:
            while queue:
                letters = [queue[i] for i in range(min(len(queue), WRITE_AT_ONCE))]
                await self._write(letters)
                for _ in letters:  # only once written: a restarted writer tries again
                    queue.popleft()
                await self._store.trim_log(DEAD_LETTERS, self.keep)
            await self._lot.park()
