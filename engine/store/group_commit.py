"""Group commit: many concurrent `commit` calls, few durable writes.

A backend builds a `GroupCommit` with its `apply` function and runs `GroupCommit.run` in a
task of its own (the flusher). Each `GroupCommit.commit` call queues one batch (in
whatever form the backend prepared it) and waits. The flusher takes every batch waiting at
that moment, up to `max_group`, and hands them to `apply` in call order; `apply` makes
them durable together (one SQLite transaction, one Redis pipeline: one fsync for the
group) and answers each batch alone: its event sequence numbers, or the `StoreError` that
refused it. So each batch is all-or-nothing, batches are applied in the order `commit`
was called, and `commit` returns only once its batch is durable (see `Store.commit`).

Cancellation: a caller cancelled while its batch is still queued withdraws it and nothing
is applied; once the flusher has taken it, the caller waits for the outcome, so a
`Cancelled` out of `commit` always means "not applied".
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeAlias, TypeVar

import trio

from tidings.engine.store.base import StoreError

_P = TypeVar("_P")

Outcome: TypeAlias = list[int] | StoreError
"""What `apply` answers for one batch: its event sequence numbers, or why it was refused."""


class _Request(Generic[_P]):
    """One `commit` call waiting for the flusher."""

    __slots__ = ("done", "outcome", "payload", "taken", "withdrawn")

    def __init__(self, payload: _P) -> None:
        self.payload = payload
        self.done = trio.Event()
        self.taken = False
        self.withdrawn = False
        self.outcome: Outcome | None = None

    def answer(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.done.set()


class GroupCommit(Generic[_P]):
    """The commit queue of one store, merging concurrent batches into durable groups.

    `apply(payloads)` must make the payloads durable in order and return one `Outcome`
    per payload; if it raises, every batch of the group gets a `StoreError` naming
    `name`. `max_group` bounds one group (the first caller's latency, one transaction's
    size); the default takes everything that is waiting.
    """

    def __init__(
        self,
        apply: Callable[[list[_P]], Awaitable[list[Outcome]]],
        *,
        name: str,
        max_group: float = math.inf,
    ) -> None:
        self._apply = apply
        self._name = name
        self._max_group = max_group
        self._send, self._receive = trio.open_memory_channel[_Request[_P]](math.inf)
        self._running = False
        self._stopped = trio.Event()

    async def commit(self, payload: _P) -> list[int]:
        """Queue `payload`, wait until it is durable; return its event sequence numbers.

        Raises the `StoreError` that refused it, or `StoreError` when the queue is closed.
        """
        request = _Request(payload)
        try:
            self._send.send_nowait(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreError("store is closed") from None
        try:
            await request.done.wait()
        except trio.Cancelled:
            if not request.taken:
                request.withdrawn = True
                raise
            with trio.CancelScope(shield=True):
                await request.done.wait()
        outcome = request.outcome
        if isinstance(outcome, StoreError):
            raise outcome
        assert outcome is not None
        return outcome

    async def run(self) -> None:
        """The flusher: apply the waiting batches group by group until `aclose`.

        Never raises but `Cancelled`; batches still queued when it ends get `StoreError`.
        """
        self._running = True
        try:
            async for first in self._receive:
                group = self._take(first)
                if group:
                    await self._flush(group)
        finally:
            self._fail_queued()
            self._receive.close()  # later commits fail at once rather than wait forever
            self._stopped.set()

    def _take(self, first: _Request[_P]) -> list[_Request[_P]]:
        """`first` and the requests queued behind it, up to `max_group`, minus withdrawn."""
        group: list[_Request[_P]] = []
        request: _Request[_P] | None = first
        while request is not None:
            if not request.withdrawn:
                request.taken = True
                group.append(request)
            if len(group) >= self._max_group:
                break
            try:
                request = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                request = None
        return group

    async def _flush(self, group: list[_Request[_P]]) -> None:
        try:
            outcomes = await self._apply([request.payload for request in group])
            for request, outcome in zip(group, outcomes, strict=True):
                request.answer(outcome)
        except BaseException as exc:
            # The flusher must survive a failed group to answer later callers.
            for request in group:
                if not request.done.is_set():
                    request.answer(StoreError(f"{self._name} commit failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise

    def _fail_queued(self) -> None:
        while True:
            try:
                request = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            request.answer(StoreError("store is closed"))

    async def aclose(self) -> None:
        """Take no more commits; return once every queued batch has been answered."""
        self._send.close()
        if self._running:
            await self._stopped.wait()
        else:
            self._fail_queued()
