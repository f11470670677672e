"""`GroupCommit`, the commit queue that SQLite and Redis share, against a scripted `apply`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from tidings.engine.store.base import StoreError
from tidings.engine.store.group_commit import GroupCommit, Outcome


class Backend:
    """An `apply` that records its groups; each payload is a number of events or an error.

    While `gate` is not set, `apply` waits on it: the test decides when a group is durable.
    """

    def __init__(self) -> None:
        self.groups: list[list[int | str]] = []
        self.gate = trio.Event()
        self.gate.set()
        self.last_seq = 0
        self.crash: BaseException | None = None

    async def apply(self, group: list[int | str]) -> list[Outcome]:
        self.groups.append(group)
        await self.gate.wait()
        if self.crash is not None:
            raise self.crash
        outcomes: list[Outcome] = []
        for payload in group:
            if isinstance(payload, str):
                outcomes.append(StoreError(payload))
            else:
                outcomes.append(list(range(self.last_seq + 1, self.last_seq + 1 + payload)))
                self.last_seq += payload
        return outcomes


@pytest.fixture
async def backend() -> Backend:
    return Backend()


@pytest.fixture
async def commits(backend: Backend) -> AsyncIterator[GroupCommit[int | str]]:
    committer = GroupCommit[int | str](backend.apply, name="test", max_group=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(committer.run)
        yield committer
        await committer.aclose()


async def test_waiting_commits_share_groups_in_call_order(
    backend: Backend, commits: GroupCommit[int | str]
) -> None:
    results: dict[int, list[int] | str] = {}

    async def call(i: int, payload: int | str) -> None:
        try:
            results[i] = await commits.commit(payload)
        except StoreError as exc:
            results[i] = str(exc)

    backend.gate = trio.Event()  # hold the first group so that the others queue up
    async with trio.open_nursery() as nursery:
        for i, payload in enumerate([1, 2, "refused", 0, 1, 3]):
            nursery.start_soon(call, i, payload)
            await trio.testing.wait_all_tasks_blocked()
        backend.gate.set()
    # The first call went alone; the rest waited and went in groups of at most 3.
    assert backend.groups == [[1], [2, "refused", 0], [1, 3]]
    assert results == {0: [1], 1: [2, 3], 2: "refused", 3: [], 4: [4], 5: [5, 6, 7]}


async def test_cancelled_while_queued_is_withdrawn(
    backend: Backend, commits: GroupCommit[int | str]
) -> None:
    backend.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(commits.commit, 1)
        await trio.testing.wait_all_tasks_blocked()  # taken: the flusher waits in apply
        with trio.move_on_after(0) as queued:
            await commits.commit(5)
        assert queued.cancelled_caught
        backend.gate.set()
    assert await commits.commit(2) == [2, 3]
    assert backend.groups == [[1], [2]]  # the withdrawn 5 events were never applied


async def test_cancelled_once_taken_waits_for_the_outcome(
    backend: Backend, commits: GroupCommit[int | str]
) -> None:
    backend.gate = trio.Event()
    got: list[list[int]] = []
    caller = trio.CancelScope()

    async def call() -> None:
        with caller:
            got.append(await commits.commit(2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        caller.cancel()  # the batch is in apply: the caller must not leave
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        backend.gate.set()
    assert got == [[1, 2]]


async def test_a_crashing_apply_fails_its_group_and_the_flusher_goes_on(
    backend: Backend, commits: GroupCommit[int | str]
) -> None:
    backend.crash = RuntimeError("disk on fire")
    with pytest.raises(StoreError, match="test commit failed: RuntimeError"):
        await commits.commit(1)
    backend.crash = None
    assert await commits.commit(1) == [1]


async def test_apply_answering_the_wrong_number_fails_the_group() -> None:
    async def short(group: list[int]) -> list[Outcome]:
        return []

    committer = GroupCommit[int](short, name="short")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(committer.run)
        with pytest.raises(StoreError, match="short commit failed"):
            await committer.commit(1)
        await committer.aclose()


async def test_aclose_answers_the_queued_then_refuses(backend: Backend) -> None:
    committer = GroupCommit[int | str](backend.apply, name="test")
    got: list[list[int]] = []

    async def call(payload: int) -> None:
        got.append(await committer.commit(payload))

    backend.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(committer.run)
        nursery.start_soon(call, 1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, 1)
        await trio.testing.wait_all_tasks_blocked()
        backend.gate.set()
        await committer.aclose()
        assert backend.groups == [[1], [1]]  # both applied before aclose returned
    assert sorted(got) == [[1], [2]]
    with pytest.raises(StoreError, match="store is closed"):
        await committer.commit(1)


async def test_a_flusher_that_dies_fails_the_queued_and_later_commits(backend: Backend) -> None:
    committer = GroupCommit[int | str](backend.apply, name="test")
    errors: list[str] = []

    async def call() -> None:
        try:
            await committer.commit(1)
        except StoreError as exc:
            errors.append(str(exc))

    backend.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as host:
            host.start_soon(committer.run)
            nursery.start_soon(call)  # taken into apply
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call)  # still queued
            await trio.testing.wait_all_tasks_blocked()
            host.cancel_scope.cancel()  # the host of the flusher goes away
    in_apply, queued = sorted(errors, reverse=True)
    assert in_apply.startswith("test commit failed: Cancelled(")
    assert queued == "store is closed"
    with pytest.raises(StoreError, match="store is closed"):
        await committer.commit(1)
