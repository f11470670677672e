"""One contract suite for every `Store`: memory, sqlite and redis must behave alike."""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio.testing import wait_all_tasks_blocked

from tidings.bench.redis_server import RedisServer
from tidings.engine import Claimed, Engine
from tidings.engine.store import Batch, DueTimer, Store, StoreError, open_store, sqlite_text
from tidings.engine.store.base import Fenced
from tidings.engine.store.memory import MemoryStore
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.redis_shards import ShardStore
from tidings.engine.store.sqlite import SqliteStore


@dataclass
class Backend:
    """A store kind and how to open (or reopen) a store of it over the same data."""

    kind: str
    open: Callable[[], Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    kind: str = request.param
    if kind == "memory":

        async def open_memory() -> Store:
            return MemoryStore()

        return Backend(kind, open_memory)
    if kind == "sqlite":

        async def open_sqlite() -> Store:
            return await SqliteStore(tmp_path / "store.db").open()

        return Backend(kind, open_sqlite)
    # redis-cluster: three masters, the store's keys all in one hash slot
    url: str = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")

    async def open_redis() -> Store:
        return await RedisStore(url, prefix="test:").open()

    return Backend(kind, open_redis)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.aclose()


def batch_of(**puts: bytes) -> Batch:
    batch = Batch()
    for key, value in puts.items():
        batch.put(key, value)
    return batch


def tags(*names: str) -> frozenset[str]:
    return frozenset(names)


# --- key/value --------------------------------------------------------------------------


async def test_kv_put_get_delete_get_many(store: Store) -> None:
    assert await store.get("a") is None
    assert await store.commit(batch_of(a=b"1", b=b"2", empty=b"")) == []
    assert await store.get("a") == b"1"
    assert await store.get("empty") == b""
    assert await store.get_many(["b", "missing", "a", "b"]) == [b"2", None, b"1", b"2"]
    assert await store.get_many([]) == []

    batch = Batch()
    batch.delete("a")
    batch.put("b", b"\x00\xff binary")
    batch.delete("never-there")
    await store.commit(batch)
    assert await store.get_many(["a", "b"]) == [None, b"\x00\xff binary"]

    batch = Batch()
    batch.put("c", b"x")
    batch.delete("c")  # the later delete wins inside one batch
    await store.commit(batch)
    assert await store.get("c") is None


# --- atomicity ----------------------------------------------------------------------


def doomed_batch() -> Batch:
    """A batch whose last write every backend refuses (a NaN score), after good writes."""
    batch = Batch()
    batch.put("doomed", b"1")
    batch.append("doomed-log", b"r")
    batch.event(b"doomed-event")
    batch.set_timer("doomed-timer", 10.0, b"t")
    batch.index("ix", "ok-member", 1.0, tags("a"))
    batch.index("ix", "bad-member", math.nan, tags("a"))
    return batch


async def assert_nothing_of_doomed(store: Store) -> None:
    assert await store.get("doomed") is None
    assert await store.log_length("doomed-log") == 0
    assert await store.due_timers(1e9, 10) == []
    assert await store.next_timer_due() is None
    assert await store.index_count("ix", tags()) == 0
    assert await store.index_query("ix", tags("a"), 10) == []
    assert all(payload != b"doomed-event" for _, payload in await store.events_since(0, 1000))


async def outcome_of(store: Store, batch: Batch) -> list[int] | StoreError:
    """What `store.commit(batch)` answers: the event sequence numbers, or the refusal."""
    try:
        return await store.commit(batch)
    except StoreError as exc:
        return exc


async def test_failed_batch_applies_nothing_and_fails_only_its_caller(store: Store) -> None:
    # SQLite stores NaN as NULL and the NOT NULL constraint stops the batch mid-way inside
    # its savepoint; memory and redis refuse it up front. Good batches committed at the
    # same moment (for sqlite: in the same group transaction) must go through.
    outcomes: dict[int, list[int] | StoreError] = {}

    async def commit(i: int, batch: Batch) -> None:
        outcomes[i] = await outcome_of(store, batch)

    async with trio.open_nursery() as nursery:
        for i in range(10):
            if i == 5:
                nursery.start_soon(commit, i, doomed_batch())
            else:
                good = batch_of(**{f"good{i}": b"ok"})
                good.event(f"good{i}".encode())
                nursery.start_soon(commit, i, good)

    assert isinstance(outcomes.pop(5), StoreError)
    seqs = sorted(s for got in outcomes.values() for s in got)  # type: ignore[union-attr]
    assert seqs == list(range(1, 10))  # the failed batch left no hole
    assert await store.get_many([f"good{i}" for i in range(10) if i != 5]) == [b"ok"] * 9
    await assert_nothing_of_doomed(store)
    assert await store.last_event_seq() == 9


async def test_a_claimed_key_that_exists_refuses_the_whole_batch(store: Store) -> None:
    # through `Engine.commit`: every store checks claims in the write itself, and the
    # batch is all or nothing
    commit = Engine(store).commit
    first = batch_of(x=b"1")
    first.claim("idem:a", b"m1")
    first.event(b"first")
    assert await commit(first) == [1]
    again = batch_of(y=b"2")
    again.claim("idem:b", b"m2")
    again.claim("idem:a", b"m3")
    again.append("log", b"r")
    again.event(b"again")
    with pytest.raises(Claimed) as refused:
        await commit(again)
    assert (refused.value.key, refused.value.value) == ("idem:a", b"m1")
    assert await store.get_many(["idem:a", "idem:b", "x", "y"]) == [b"m1", None, b"1", None]
    assert await store.log_length("log") == 0
    assert await store.last_event_seq() == 1
    other = Batch()
    other.claim("idem:b", b"m2")
    assert await commit(other) == []
    assert await store.get("idem:b") == b"m2"


async def test_batches_committed_together_claim_a_key_once(store: Store) -> None:
    """Batches that reach the store at the same moment (one group: one SQLite transaction,
    one call of the Redis commit script) claiming the same key: the first called is
    applied, each later one is refused alone with the value the first stored, and the
    batches around them go through with gap-free event numbers."""
    called: list[int] = []
    outcomes: dict[int, list[int] | StoreError] = {}

    async def commit(i: int) -> None:
        batch = batch_of(**{f"k{i}": b"v"})
        batch.event(f"e{i}".encode())
        batch.append("log", f"r{i}".encode())
        if i % 3 == 0:
            batch.claim("idem:same", f"m{i}".encode())
        called.append(i)  # no checkpoint between this and the commit call
        outcomes[i] = await outcome_of(store, batch)

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(commit, i)
    first, *later = [i for i in called if i % 3 == 0]
    refused = {i: o for i, o in outcomes.items() if isinstance(o, Claimed)}
    assert sorted(refused) == sorted(later)
    assert all((c.key, c.value) == ("idem:same", f"m{first}".encode()) for c in refused.values())
    applied = [o for o in outcomes.values() if isinstance(o, list)]
    assert sorted(s for seqs in applied for s in seqs) == list(range(1, 8))
    assert await store.get("idem:same") == f"m{first}".encode()
    assert await store.get_many([f"k{i}" for i in later]) == [None] * len(later)
    assert await store.log_tail("log", 10) == [f"r{i}".encode() for i in called if i not in later]


async def test_batches_committed_together_leave_what_the_last_one_wrote(store: Store) -> None:
    """A key, timer, index member and text member that several batches of one group write
    end as the last of them left it, and a log they all append to holds every record in
    call order."""
    first = Batch()
    first.put("k", b"1")
    first.set_timer("t", 10.0, b"p1")
    first.index("ix", "m", 1.0, tags("open", "unread"))
    first.index_text("tx", "m", 1.0, "first words")
    await store.commit(first)  # stored before the group

    def step(i: int) -> Batch:
        batch = Batch()
        batch.append("log", b"r%d" % i)
        if i % 2:  # odd: take everything out
            batch.delete("k")
            batch.cancel_timer("t")
            batch.unindex("ix", "m")
            batch.unindex_text("tx", "m")
        else:  # even: write it anew
            batch.put("k", b"v%d" % i)
            batch.set_timer("t", 10.0 + i, b"p%d" % i)
            batch.index("ix", "m", float(i), tags("open") if i % 4 else tags("closed", "unread"))
            batch.index_text("tx", "m", float(i), f"words{i} shared")
        return batch

    for last in (5, 6):  # the group ends with a removal, then with a write
        async with trio.open_nursery() as nursery:
            for i in range(last + 1):
                nursery.start_soon(store.commit, step(i))
                await trio.lowlevel.checkpoint()  # the call order is i's order
        if last == 5:
            assert await store.get("k") is None
            assert await store.due_timers(1e9, 10) == []
            assert await store.index_query("ix", tags(), 10) == []
            assert await store.index_count("ix", tags("open")) == 0
            assert await store.index_count("ix", tags("closed", "unread")) == 0
            assert await store.text_query("tx", "shared", 10) == []
        else:
            assert await store.get("k") == b"v6"
            assert await store.due_timers(1e9, 10) == [DueTimer("t", 16.0, b"p6")]
            assert await store.index_query("ix", tags("open"), 10) == [("m", 6.0)]
            assert await store.index_count("ix", tags()) == 1
            assert await store.index_count("ix", tags("closed", "unread")) == 0
            assert await store.index_count("ix", tags("unread")) == 0
            assert await store.text_query("tx", "words6 shared", 10) == [("m", 6.0)]
            assert await store.text_query("tx", "words4", 10) == []
    records = [b"r%d" % i for last in (5, 6) for i in range(last + 1)]
    assert await store.log_tail("log", 100) == records


async def test_closed_store_refuses_commits(backend: Backend) -> None:
    store = await backend.open()
    await store.aclose()
    with pytest.raises(StoreError):
        await store.commit(batch_of(a=b"1"))


async def test_cancelled_commit_is_either_applied_or_not_at_all(store: Store) -> None:
    for i in range(20):
        batch = batch_of(**{f"k{i}": b"v"})
        batch.event(b"e")
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.commit(batch)
        applied = await store.get(f"k{i}") is not None
        assert applied != scope.cancelled_caught
    seqs = [s for s, _ in await store.events_since(0, 100)]
    assert seqs == list(range(1, len(seqs) + 1))


# --- logs -----------------------------------------------------------------------------


async def test_log_append_tail_length(store: Store) -> None:
    assert await store.log_tail("thread-1", 5) == []
    assert await store.log_length("thread-1") == 0
    batch = Batch()
    for i in range(5):
        batch.append("thread-1", f"m{i}".encode())
    batch.append("thread-2", b"other")
    await store.commit(batch)
    batch = Batch()
    batch.append("thread-1", b"m5")
    await store.commit(batch)
    assert await store.log_length("thread-1") == 6
    assert await store.log_tail("thread-1", 3) == [b"m3", b"m4", b"m5"]
    assert await store.log_tail("thread-1", 100) == [f"m{i}".encode() for i in range(6)]
    assert await store.log_tail("thread-1", 0) == []
    assert await store.log_tail("thread-2", 5) == [b"other"]


# --- events ---------------------------------------------------------------------------


async def test_events_are_gap_free_from_one_across_concurrent_commits(store: Store) -> None:
    got: dict[int, list[int]] = {}

    async def commit(i: int) -> None:
        batch = Batch()
        for j in range(i % 3):  # 0, 1 or 2 events per batch
            batch.event(f"{i}.{j}".encode())
        got[i] = await store.commit(batch)

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(commit, i)

    total = sum(i % 3 for i in range(200))
    assert sorted(s for seqs in got.values() for s in seqs) == list(range(1, total + 1))
    for i, seqs in got.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else i % 3 == 0
    assert await store.last_event_seq() == total
    by_seq = dict(await store.events_since(0, total + 10))
    for i, seqs in got.items():
        assert [by_seq[s] for s in seqs] == [f"{i}.{j}".encode() for j in range(i % 3)]


async def test_commits_apply_in_call_order(store: Store) -> None:
    called: list[int] = []
    seq_of: dict[int, int] = {}

    async def commit(i: int) -> None:
        batch = Batch()
        batch.event(str(i).encode())
        called.append(i)  # no checkpoint between this and the commit call
        seq_of[i] = (await store.commit(batch))[0]

    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(commit, i)
    assert [seq_of[i] for i in called] == list(range(1, 101))


async def test_events_since_pages(store: Store) -> None:
    assert await store.events_since(0, 10) == []
    assert await store.last_event_seq() == 0
    for start in range(0, 25, 5):
        batch = Batch()
        for i in range(start, start + 5):
            batch.event(f"e{i + 1}".encode())
        await store.commit(batch)
    seen: list[tuple[int, bytes]] = []
    cursor = 0
    while page := await store.events_since(cursor, 7):
        assert len(page) <= 7
        seen += page
        cursor = page[-1][0]
    assert seen == [(i, f"e{i}".encode()) for i in range(1, 26)]
    assert await store.events_since(20, 100) == [(i, f"e{i}".encode()) for i in range(21, 26)]
    assert await store.events_since(25, 10) == []
    assert await store.events_since(-5, 2) == [(1, b"e1"), (2, b"e2")]
    assert await store.events_since(3, 0) == []


# --- durable timers -------------------------------------------------------------------


async def test_durable_timers(store: Store) -> None:
    assert await store.next_timer_due() is None
    batch = Batch()
    batch.set_timer("snooze:3", 30.0, b"c")
    batch.set_timer("snooze:1", 10.0, b"a")
    batch.set_timer("snooze:2b", 20.0, b"b2")
    batch.set_timer("snooze:2a", 20.0, b"b1")  # same due: ordered by key
    batch.set_timer("later", 1e12, b"z")
    await store.commit(batch)
    assert await store.next_timer_due() == 10.0
    assert await store.due_timers(20.0, 10) == [
        DueTimer("snooze:1", 10.0, b"a"),
        DueTimer("snooze:2a", 20.0, b"b1"),
        DueTimer("snooze:2b", 20.0, b"b2"),
    ]
    assert await store.due_timers(100.0, 2) == [
        DueTimer("snooze:1", 10.0, b"a"),
        DueTimer("snooze:2a", 20.0, b"b1"),
    ]
    assert await store.due_timers(9.99, 10) == []
    assert await store.due_timers(100.0, 0) == []

    batch = Batch()
    batch.set_timer("snooze:1", 40.0, b"moved")  # replaces by key
    batch.cancel_timer("snooze:2a")
    batch.cancel_timer("never-set")
    await store.commit(batch)
    assert await store.next_timer_due() == 20.0
    assert await store.due_timers(50.0, 10) == [
        DueTimer("snooze:2b", 20.0, b"b2"),
        DueTimer("snooze:3", 30.0, b"c"),
        DueTimer("snooze:1", 40.0, b"moved"),
    ]
    batch = Batch()
    for key in ("snooze:1", "snooze:2b", "snooze:3", "later"):
        batch.cancel_timer(key)
    await store.commit(batch)
    assert await store.next_timer_due() is None
    assert await store.due_timers(math.inf, 10) == []


# --- sorted indexes -------------------------------------------------------------------


async def test_index_query_tags_order_ties_and_replacement(store: Store) -> None:
    batch = Batch()
    batch.index("tickets", "t1", 5.0, tags("state=open", "unread=1"))
    batch.index("tickets", "t2", 7.0, tags("state=open"))
    batch.index("tickets", "t3", 5.0, tags("state=open", "unread=1"))
    batch.index("tickets", "t4", 9.0, tags("state=closed", "unread=1"))
    batch.index("tickets", "t0", 5.0, tags())
    batch.index("other", "t1", 100.0, tags("state=open"))
    await store.commit(batch)

    open_unread = tags("state=open", "unread=1")
    assert await store.index_query("tickets", open_unread, 10) == [("t3", 5.0), ("t1", 5.0)]
    assert await store.index_query("tickets", open_unread, 10, descending=False) == [
        ("t1", 5.0),
        ("t3", 5.0),
    ]
    assert await store.index_query("tickets", tags("state=open"), 10) == [
        ("t2", 7.0),
        ("t3", 5.0),
        ("t1", 5.0),
    ]
    assert await store.index_query("tickets", tags(), 2) == [("t4", 9.0), ("t2", 7.0)]
    assert await store.index_query("tickets", tags(), 10, descending=False) == [
        ("t0", 5.0),
        ("t1", 5.0),
        ("t3", 5.0),
        ("t2", 7.0),
        ("t4", 9.0),
    ]
    assert await store.index_query("tickets", tags("nobody"), 10) == []
    assert await store.index_query("tickets", tags("state=open", "nobody"), 10) == []
    assert await store.index_query("missing", tags(), 10) == []
    assert await store.index_query("tickets", tags(), 0) == []
    assert await store.index_count("tickets", tags()) == 5
    assert await store.index_count("tickets", tags("state=open")) == 3
    assert await store.index_count("tickets", open_unread) == 2
    assert await store.index_count("tickets", tags("state=open", "nobody")) == 0
    assert await store.index_count("missing", tags("x")) == 0

    batch = Batch()
    batch.index("tickets", "t1", 1.0, tags("state=closed"))  # replaces score and tags
    batch.unindex("tickets", "t3")
    batch.unindex("tickets", "never-there")
    await store.commit(batch)
    assert await store.index_query("tickets", open_unread, 10) == []
    assert await store.index_query("tickets", tags("state=closed"), 10) == [
        ("t4", 9.0),
        ("t1", 1.0),
    ]
    assert await store.index_count("tickets", tags()) == 4
    assert await store.index_count("tickets", tags("unread=1")) == 1
    assert await store.index_query("other", tags("state=open"), 10) == [("t1", 100.0)]


async def test_index_after_cursor_pages_through_ties(store: Store) -> None:
    batch = Batch()
    for i in range(60):
        # Many ties (score i % 4), members whose byte order differs from numeric order.
        batch.index("ix", f"m{i}", float(i % 4), tags("even") if i % 2 == 0 else tags())
    await store.commit(batch)
    for wanted, descending, page in itertools.product(
        (tags(), tags("even")), (True, False), (1, 7, 60)
    ):
        rows: list[tuple[str, float]] = []
        after: tuple[float, str] | None = None
        while chunk := await store.index_query(
            "ix", wanted, page, descending=descending, after=after
        ):
            rows += chunk
            after = (chunk[-1][1], chunk[-1][0])
        expected = sorted(
            ((f"m{i}", float(i % 4)) for i in range(60) if not wanted or i % 2 == 0),
            key=lambda r: (r[1], r[0]),
            reverse=descending,
        )
        assert rows == expected, (wanted, descending, page)
    # A cursor row that is no longer in the index still positions the page.
    assert await store.index_query("ix", tags(), 2, after=(2.0, "m1")) == [
        ("m9", 1.0),
        ("m57", 1.0),
    ]
    assert await store.index_query("ix", tags(), 2, descending=False, after=(0.5, "zz")) == [
        ("m1", 1.0),
        ("m13", 1.0),
    ]


_example_ids = itertools.count()
_members = st.sampled_from([f"m{i}" for i in range(12)])
_tag_sets = st.frozensets(st.sampled_from(["a", "b", "c"]), max_size=3)
_scores = st.sampled_from([0.0, 1.0, 1.5, -2.0, 1e300])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _members, _scores, _tag_sets),
        st.tuples(st.just("del"), _members, st.just(0.0), st.just(frozenset())),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    ops=_ops,
    wanted=_tag_sets,
    page=st.integers(1, 5),
    descending=st.booleans(),
)
async def test_index_matches_the_memory_model(
    backend: Backend,
    ops: list[tuple[str, str, float, frozenset[str]]],
    wanted: frozenset[str],
    page: int,
    descending: bool,
) -> None:
    # Each example is its own trio run, so it opens its own store (over the same file or
    # server for sqlite and redis: hence a fresh index name per example).
    store = await backend.open()
    try:
        await check_index_against_model(store, ops, wanted, page, descending)
    finally:
        await store.aclose()


async def check_index_against_model(
    store: Store,
    ops: list[tuple[str, str, float, frozenset[str]]],
    wanted: frozenset[str],
    page: int,
    descending: bool,
) -> None:
    index = f"h{next(_example_ids)}"
    model = MemoryStore()
    for batch_ops in (ops[: len(ops) // 2], ops[len(ops) // 2 :]):
        batch = Batch()
        for op, member, score, member_tags in batch_ops:
            if op == "put":
                batch.index(index, member, score, member_tags)
            else:
                batch.unindex(index, member)
        await model.commit(batch)
        await store.commit(batch)

    async def all_pages(s: Store) -> list[tuple[str, float]]:
        rows: list[tuple[str, float]] = []
        after: tuple[float, str] | None = None
        while chunk := await s.index_query(index, wanted, page, descending=descending, after=after):
            rows += chunk
            after = (chunk[-1][1], chunk[-1][0])
        return rows

    expected = await all_pages(model)
    got = await all_pages(store)
    assert got == expected
    assert len({m for m, _ in got}) == len(got)  # every member exactly once
    assert await store.index_count(index, wanted) == await model.index_count(index, wanted)


# --- text indexes ---------------------------------------------------------------------


async def index_texts(store: Store, index: str, texts: dict[str, tuple[float, str]]) -> None:
    batch = Batch()
    for member, (score, text) in texts.items():
        batch.index_text(index, member, score, text)
    await store.commit(batch)


async def test_text_query_finds_every_word_without_case_or_accents(store: Store) -> None:
    await index_texts(store, "tx", {
        "m1": (1.0, "Perché l'ordine 1001 è in ritardo?"),
        "m2": (2.0, "ORDER 1001 shipped"),
        "m3": (3.0, "order 1002, Straße"),
        "m4": (4.0, "Città: ordine annullato"),
    })  # fmt: skip
    assert await store.text_query("tx", "perche ORDINE", 10) == [("m1", 1.0)]
    assert await store.text_query("tx", "1001", 10) == [("m2", 2.0), ("m1", 1.0)]
    assert await store.text_query("tx", "order", 10) == [("m3", 3.0), ("m2", 2.0)]
    assert await store.text_query("tx", "strasse", 10) == [("m3", 3.0)]
    assert await store.text_query("tx", "CITTA ordine", 10) == [("m4", 4.0)]
    assert await store.text_query("tx", "order 1003", 10) == []  # every word, not any
    assert await store.text_query("tx", "ord", 10) == []  # words, not parts of words
    assert await store.text_query("tx", "  ,.;  ", 10) == []  # no words: nothing
    assert await store.text_query("other", "order", 10) == []
    assert await store.text_query("tx", "order", 1) == [("m3", 3.0)]


@pytest.mark.parametrize(
    "query",
    ['"', '""', "*", "order*", "NEAR(order", "NEAR(order 1001)", "order OR ritardo",
     "NOT order", "-order", "order AND", "(", ")", "^order", "words:order", "{words}: order",
     "\x00", "order\x00 1001", "x" * 10_000, "order " * 2_000, "\ud7ff", "'", "%", "_"],
)  # fmt: skip
async def test_text_query_syntax_is_never_the_backends(store: Store, query: str) -> None:
    """Hostile queries are words like any others: no FTS5 operator, no Redis pattern."""
    await index_texts(store, "tx", {"m1": (1.0, "order 1001 near or not"), "m2": (2.0, "x")})
    found = await store.text_query("tx", query, 10)
    expected = await text_model(query, {"m1": (1.0, "order 1001 near or not"), "m2": (2.0, "x")})
    assert found == expected


async def text_model(query: str, texts: dict[str, tuple[float, str]]) -> list[tuple[str, float]]:
    model = MemoryStore()
    await index_texts(model, "tx", texts)
    return await model.text_query("tx", query, 10)


async def test_a_failed_batch_leaves_no_text_entry_behind(store: Store) -> None:
    """The text index is written with the batch or not at all: a record and its entry
    never part (the last write, a NaN score, is refused by every backend)."""
    batch = Batch()
    batch.put("msg:doomed", b"record")
    batch.index_text("tx", "doomed", 1.0, "doomed order")
    batch.index_text("tx", "nan", math.nan, "doomed order")
    with pytest.raises(StoreError):
        await store.commit(batch)
    assert await store.get("msg:doomed") is None
    assert await store.text_query("tx", "doomed", 10) == []


async def test_text_put_again_replaces_and_unindex_removes(store: Store) -> None:
    await index_texts(store, "tx", {"a": (1.0, "red apple"), "b": (2.0, "red car")})
    await index_texts(store, "tx", {"a": (3.0, "green apple")})
    assert await store.text_query("tx", "red", 10) == [("b", 2.0)]
    assert await store.text_query("tx", "apple", 10) == [("a", 3.0)]
    batch = Batch()
    batch.unindex_text("tx", "b")
    batch.index_text("tx", "a", 3.0, " ... ")  # no words: taken out
    await store.commit(batch)
    assert await store.text_query("tx", "red", 10) == []
    assert await store.text_query("tx", "apple", 10) == []
    batch = Batch()
    batch.unindex_text("tx", "a")
    batch.index_text("tx", "a", 5.0, "blue apple")  # the later call of a batch wins
    await store.commit(batch)
    assert await store.text_query("tx", "apple", 10) == [("a", 5.0)]


async def test_text_after_cursor_pages_through_ties(store: Store) -> None:
    texts = {f"m{i}": (float(i // 3), f"word n{i}") for i in range(10)}
    await index_texts(store, "tx", texts)
    pages: list[list[tuple[str, float]]] = []
    after: tuple[float, str] | None = None
    while chunk := await store.text_query("tx", "word", 4, after=after):
        pages.append(chunk)
        after = (chunk[-1][1], chunk[-1][0])
    rows = [row for page in pages for row in page]
    assert rows == sorted(
        ((m, s) for m, (s, _) in texts.items()), key=lambda r: (r[1], r[0]), reverse=True
    )
    assert [len(p) for p in pages] == [4, 4, 2]


@pytest.mark.parametrize("few", [0, 3, 10_000])
async def test_sqlite_text_plans_agree_with_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    """Both plans of `sqlite_text.query` (read every match; walk members by score) give
    what the memory model gives, page after page."""
    monkeypatch.setattr(sqlite_text, "FEW", few)
    texts = {f"m{i:02d}": (float(i % 7), f"w{i % 2} w{i % 3} w{i % 5} x") for i in range(60)}
    async with SqliteStore(tmp_path / "plans.db") as store:
        await index_texts(store, "tx", texts)
        await index_texts(store, "other", {"m99": (9.0, "w0 w1 x")})  # another index
        for query in ("w0", "w1 w2", "w0 w0 w4", "x", "w9"):
            for page in (1, 4, 50):
                assert await all_text_pages(store, query, page) == await all_text_pages(
                    await model_of(texts), query, page
                ), (query, page)


async def model_of(texts: dict[str, tuple[float, str]]) -> Store:
    model = MemoryStore()
    await index_texts(model, "tx", texts)
    return model


async def all_text_pages(
    store: Store, query: str, page: int, index: str = "tx"
) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    after: tuple[float, str] | None = None
    while chunk := await store.text_query(index, query, page, after=after):
        rows += chunk
        after = (chunk[-1][1], chunk[-1][0])
    return rows


_vocabulary = st.sampled_from(["order", "Ordine", "perché", "PERCHE", "1001", "città", "ship"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.dictionaries(
        st.sampled_from([f"m{i}" for i in range(8)]),
        st.tuples(st.integers(0, 3).map(float), st.lists(_vocabulary, max_size=4).map(" ".join)),
        max_size=8,
    ),
    query=st.lists(_vocabulary, min_size=1, max_size=3).map(" ".join),
    page=st.integers(1, 4),
)
async def test_text_matches_the_memory_model(
    backend: Backend, texts: dict[str, tuple[float, str]], query: str, page: int
) -> None:
    store = await backend.open()
    index = f"tx{next(_example_ids)}"
    model = MemoryStore()
    try:
        for s in (model, store):
            batch = Batch()
            for member, (score, text) in texts.items():
                batch.index_text(index, member, score, text)
            await s.commit(batch)

        assert await all_text_pages(store, query, page, index) == await all_text_pages(
            model, query, page, index
        )
    finally:
        await store.aclose()


# --- persistence ----------------------------------------------------------------------


async def fill_everything(store: Store) -> None:
    batch = batch_of(k=b"v")
    batch.append("log", b"r1")
    batch.event(b"e1")
    batch.event(b"e2")
    batch.set_timer("t", 5.0, b"p")
    batch.index("ix", "m", 3.0, tags("x"))
    batch.index_text("tx", "m", 4.0, "Perché l'ordine")
    assert await store.commit(batch) == [1, 2]


async def check_everything(store: Store) -> None:
    assert await store.get("k") == b"v"
    assert await store.log_tail("log", 5) == [b"r1"]
    assert await store.events_since(0, 10) == [(1, b"e1"), (2, b"e2")]
    assert await store.last_event_seq() == 2
    assert await store.due_timers(10.0, 10) == [DueTimer("t", 5.0, b"p")]
    assert await store.index_query("ix", tags("x"), 10) == [("m", 3.0)]
    assert await store.index_count("ix", tags("x")) == 1
    assert await store.text_query("tx", "ORDINE perche", 10) == [("m", 4.0)]
    batch = Batch()
    batch.event(b"e3")
    batch.append("log", b"r2")
    assert await store.commit(batch) == [3]  # numbering goes on after a reopen
    assert await store.log_tail("log", 5) == [b"r1", b"r2"]


@pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)  # memory keeps nothing
async def test_reopen_keeps_everything(backend: Backend) -> None:
    store = await backend.open()
    await fill_everything(store)
    await store.aclose()
    store = await backend.open()
    try:
        await check_everything(store)
    finally:
        await store.aclose()


async def test_redis_data_survives_a_killed_server(redis_server: object, redis_url: str) -> None:
    from tests.redis_server import RedisServer

    assert isinstance(redis_server, RedisServer)
    store = await RedisStore(redis_url).open()
    await fill_everything(store)
    await store.aclose()
    redis_server.restart()  # SIGKILL: only the AOF (appendfsync always) has the data
    store = await RedisStore(redis_url).open()
    try:
        await check_everything(store)
    finally:
        await store.aclose()


# --- redis group commit ---------------------------------------------------------------


async def outcomes_of_one_group(store: Store, batches: list[Batch]) -> list[list[int] | StoreError]:
    """Commit `batches` at the same moment, in order; what each one's commit answered."""
    outcomes: list[list[int] | StoreError] = [[] for _ in batches]

    async def commit(i: int) -> None:
        outcomes[i] = await outcome_of(store, batches[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(batches)):
            nursery.start_soon(commit, i)
            await trio.lowlevel.checkpoint()  # the call order is i's order
    return outcomes


def numbered(i: int) -> Batch:
    batch = batch_of(**{f"k{i}": b"v"})
    batch.event(b"e%d" % i)
    return batch


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"], indirect=True)
async def test_redis_a_fenced_batch_is_refused_alone_in_its_group(backend: Backend) -> None:
    """One call of the commit script applies a whole group and answers each batch alone:
    a batch whose fencing token is not its shard's epoch any more applies nothing, and
    the batches before and after it in the group are applied."""
    store = await backend.open()
    assert isinstance(store, RedisStore)
    try:
        epoch = await ShardStore(store, "node-a").acquire(3, 60_000)
        batches = [numbered(i) for i in range(5)]
        batches[1].fence = (3, epoch - 1)  # a node that held the shard before
        batches[2].fence = (3, epoch)
        outcomes = await outcomes_of_one_group(store, batches)
        assert isinstance(outcomes[1], Fenced)
        assert [outcomes[i] for i in (0, 2, 3, 4)] == [[1], [2], [3], [4]]
        assert await store.get_many([f"k{i}" for i in range(5)]) == [b"v", None, b"v", b"v", b"v"]
    finally:
        await store.aclose()


async def test_redis_a_batch_whose_command_fails_is_refused_alone_in_its_group(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A command that fails inside the commit script (here an append to a log key that
    holds a string, which no batch can do) refuses its batch with `StoreError` and the
    other batches of the group are applied, numbered without a gap."""
    store = await RedisStore(redis_url, prefix="test:").open()
    try:
        assert redis_server.command("SET", "{test:}log:broken", "a-string") == b"+OK\r\n"
        batches = [numbered(i) for i in range(5)]
        batches[2].append("broken", b"record")
        outcomes = await outcomes_of_one_group(store, batches)
        assert isinstance(outcomes[2], StoreError) and "WRONGTYPE" in str(outcomes[2])
        assert [outcomes[i] for i in (0, 1, 3, 4)] == [[1], [2], [3], [4]]
        assert await store.get_many(["k0", "k4"]) == [b"v", b"v"]
    finally:
        await store.aclose()


# --- sqlite group commit --------------------------------------------------------------


async def test_sqlite_group_commit_shares_transactions(tmp_path: Path) -> None:
    store = await SqliteStore(tmp_path / "group.db").open()
    try:
        async with trio.open_nursery() as nursery:
            for i in range(1000):
                batch = batch_of(**{f"k{i}": b"v"})
                batch.event(b"e")
                batch.append("log", b"r")
                nursery.start_soon(store.commit, batch)
        assert store.batches == 1000
        assert store.transactions <= 100, store.transactions  # one fsync per transaction
        assert await store.last_event_seq() == 1000
        assert await store.log_length("log") == 1000
    finally:
        await store.aclose()


async def test_sqlite_a_refused_batch_fails_alone_in_its_group(tmp_path: Path) -> None:
    """A group is applied without a savepoint per batch; when one batch is refused, the
    group is applied again with them, so only that batch's caller gets `StoreError`."""
    store = await SqliteStore(tmp_path / "group.db").open()
    refused: list[int] = []

    async def commit(i: int) -> None:
        batch = batch_of(**{f"k{i}": b"v"})
        batch.event(f"e{i}".encode())
        batch.append("log", f"r{i}".encode())
        batch.index_text("tx", f"m{i}", math.nan if i == 5 else float(i), f"word n{i}")
        try:
            await store.commit(batch)
        except StoreError:
            refused.append(i)

    try:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(commit, i)
        assert refused == [5]
        assert store.batches == 9 and store.transactions == 1  # one group, applied once
        assert await store.get("k5") is None and await store.get("k4") == b"v"
        assert await store.last_event_seq() == 9
        events = await store.events_since(0, 100)
        assert [seq for seq, _ in events] == list(range(1, 10))  # no hole where 5 was
        assert b"e5" not in [payload for _, payload in events]
        assert await store.log_length("log") == 9
        assert [m for m, _ in await store.text_query("tx", "word", 20)] == [
            f"m{i}" for i in (9, 8, 7, 6, 4, 3, 2, 1, 0)
        ]
    finally:
        await store.aclose()


async def test_sqlite_commit_waits_for_another_writer_without_blocking_reads(
    tmp_path: Path,
) -> None:
    """While another process holds SQLite's write lock, a commit waits for it (in a
    worker thread: the trio thread goes on serving reads) and then succeeds."""
    path = tmp_path / "busy.db"
    store = await SqliteStore(path).open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await store.commit(batch_of(before=b"1"))
        other.execute("BEGIN IMMEDIATE")
        committed = trio.Event()

        async def write() -> None:
            await store.commit(batch_of(during=b"2"))
            committed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await wait_all_tasks_blocked()
            assert await store.get("before") == b"1"  # the trio thread is free
            assert not committed.is_set()
            other.execute("COMMIT")
        assert await store.get("during") == b"2"
    finally:
        other.close()
        await store.aclose()


# --- open_store -----------------------------------------------------------------------


async def check_open_store(url: str, kind: type) -> None:
    store = await open_store(url)
    try:
        assert isinstance(store, kind)
        await store.commit(batch_of(a=b"1"))
        assert await store.get("a") == b"1"
    finally:
        await store.aclose()


async def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    await check_open_store("memory://", MemoryStore)
    await check_open_store("sqlite:///rel/store.db", SqliteStore)
    assert (tmp_path / "rel" / "store.db").exists()
    await check_open_store(f"sqlite:///{tmp_path}/abs.db", SqliteStore)  # sqlite:////tmp/...
    assert (tmp_path / "abs.db").exists()


async def test_open_store_redis_url(redis_url: str) -> None:
    await check_open_store(redis_url, RedisStore)


@pytest.mark.parametrize(
    "url",
    ["", "nothing", "postgres://x/y", "memory://x", "sqlite://", "sqlite://rel.db",
     "redis://", "redis://host:port/0", "redis://host:6379/zero"],
)  # fmt: skip
async def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        await open_store(url)


async def test_index_member_moved_to_a_new_score_keeps_its_tags_and_counts(store: Store) -> None:
    batch = Batch()
    batch.index("ix", "a", 1.0, tags("open", "unread"))
    batch.index("ix", "b", 2.0, tags("open", "unread"))
    await store.commit(batch)
    batch = Batch()
    batch.index("ix", "a", 3.0, tags("open", "unread"))  # same tags, new score
    await store.commit(batch)
    assert await store.index_query("ix", tags("open"), 10) == [("a", 3.0), ("b", 2.0)]
    assert await store.index_query("ix", tags("open", "unread"), 10, after=(3.0, "a")) == [
        ("b", 2.0)
    ]
    assert await store.index_count("ix", tags("open", "unread")) == 2
    assert await store.index_count("ix", tags("unread")) == 2
    batch = Batch()
    batch.index("ix", "a", 4.0, tags("closed"))  # tags change too
    await store.commit(batch)
    assert await store.index_query("ix", tags("open"), 10) == [("b", 2.0)]
    assert await store.index_count("ix", tags("open")) == 1
    assert await store.index_query("ix", tags("closed"), 10) == [("a", 4.0)]


# --- retention --------------------------------------------------------------------------


def events_batch(*payloads: bytes) -> Batch:
    batch = Batch()
    for payload in payloads:
        batch.event(payload)
    return batch


async def test_dropped_events_leave_oldest_and_numbering_unchanged(backend: Backend) -> None:
    store = await backend.open()
    try:
        assert await store.first_event_seq() == 1  # a new store: nothing dropped yet
        await store.commit(events_batch(*(b"e%d" % i for i in range(1, 11))))
        assert await store.first_event_seq() == 1
        await store.drop_events(4)
        assert await store.first_event_seq() == 5
        assert [s for s, _ in await store.events_since(0, 100)] == list(range(5, 11))
        assert await store.events_since(6, 2) == [(7, b"e7"), (8, b"e8")]
        assert await store.last_event_seq() == 10
        assert await store.commit(events_batch(b"e11")) == [11]  # numbers never go back
        await store.drop_events(2)  # already gone: nothing changes
        assert await store.first_event_seq() == 5
        await store.drop_events(11)
        assert await store.events_since(0, 100) == []
        assert await store.first_event_seq() == 12  # none kept: the next one to come
    finally:
        await store.aclose()
    if backend.kind != "memory":  # the same after reopening
        store = await backend.open()
        try:
            assert await store.first_event_seq() == 12
            assert await store.commit(events_batch(b"e12")) == [12]
            assert await store.first_event_seq() == 12
        finally:
            await store.aclose()


async def test_trim_log_keeps_the_newest_records(store: Store) -> None:
    batch = Batch()
    for i in range(1, 8):
        batch.append("letters", b"r%d" % i)
    batch.append("other", b"x")
    await store.commit(batch)
    await store.trim_log("letters", 3)
    assert await store.log_tail("letters", 10) == [b"r5", b"r6", b"r7"]
    assert await store.log_length("letters") == 3
    assert await store.log_length("other") == 1
    await store.commit(batch_append("letters", b"r8"))
    assert await store.log_tail("letters", 10) == [b"r5", b"r6", b"r7", b"r8"]
    await store.trim_log("letters", 10)  # fewer than that: nothing dropped
    assert await store.log_length("letters") == 4
    await store.trim_log("nothing-here", 3)
    assert await store.log_length("nothing-here") == 0


def batch_append(stream: str, record: bytes) -> Batch:
    batch = Batch()
    batch.append(stream, record)
    return batch
