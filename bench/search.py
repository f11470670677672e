"""Scenario `search`: `messages.search` over a SQLite store of many messages.

Setup: `N` (1,000,000; quick: 5,000) inbound SMS messages from `N / 100` profiles,
written straight into a SQLite store in batches of `BATCH` with `SqliteStore.commit`
(the fast path: each ``msg:{id}`` record with its ``messages`` text index entry, as
`thread.record` writes them, and each ``profile:{id}`` record with its ``profiles``
entry), then the store is closed and reopened under an inbox. Bodies are 8 to 16 words
drawn from a vocabulary of `VOCABULARY` words with Zipf-like frequencies (the first word
is in about 10% of the messages), plus an order number of their own.

Then `QUERIES` (quick: 50) calls of `Inbox.messages_search(q)` (limit 20), timed one by
one, over five kinds of query of different selectivity: one order number (1 message), a
rare word (~0.01%), a middling word (~0.3%), a common word (~5%), and two common words
together. Reported: the median and p99 over all the queries, and the median per kind.
Baseline: the bare FTS5 lookup on the same file (``SELECT rowid FROM text_words WHERE
text_words MATCH ? LIMIT 20``: no order by time, no records read), so the ratio is what
ordering by newest and reading the messages and their profiles costs on top.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import tempfile
import time
from itertools import accumulate
from pathlib import Path

import trio

from tidings.actors import searchable
from tidings.actors.inbox import open_inbox
from tidings.actors.model import Message, Profile, StoredMessage, encode, iso
from tidings.actors.profile import ProfileState
from tidings.bench.harness import Progress, Row, row, scenario
from tidings.engine import Batch
from tidings.engine.store import open_store
from tidings.engine.store.sqlite_text import match_expression
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

FULL = 1_000_000
BATCH = 10_000
VOCABULARY = 30_000
QUERIES = 200
KINDS = ("order number", "rare word", "middling word", "common word", "two common words")


def _vocabulary() -> tuple[list[str], list[float]]:
    words = [f"w{i}" for i in range(VOCABULARY)]
    return words, list(accumulate(1 / (i + 1) for i in range(VOCABULARY)))


async def _write(url: str, n: int, progress: Progress) -> float:
    """Write `n` messages and their profiles; return messages/s."""
    rng = random.Random(14)
    words, cumulative = _vocabulary()
    profiles = max(n // 100, 1)
    store = await open_store(url)
    base = time.time() - n
    started = time.perf_counter()
    try:
        batch = Batch()
        for p in range(profiles):
            profile = Profile(f"p{p:07d}", phone=f"+1444{p:07d}", name=f"Customer {p}")
            batch.put(f"profile:{profile.id}", encode(ProfileState(profile)))
            searchable.index_profile(batch, profile)
        await store.commit(batch)
        for start in range(0, n, BATCH):
            batch = Batch()
            count = min(BATCH, n - start)
            drawn = rng.choices(words, cum_weights=cumulative, k=16 * count)
            for i in range(start, start + count):
                body = " ".join(drawn[(i - start) * 16 : (i - start) * 16 + 8 + i % 9])
                message = Message(
                    id=f"m{i:08d}", ticket=f"t{i // 10:07d}", profile=f"p{i % profiles:07d}",
                    channel="sms", direction="inbound", kind="support",
                    body=f"{body} order {1_000_000 + i}", media=[], created_at=iso(base + i),
                )  # fmt: skip
                batch.put(f"msg:{message.id}", encode(StoredMessage(message)))
                searchable.index_message(batch, message)
            await store.commit(batch)
            progress(0.8 * (start + count) / n, f"writing {n:,} messages")
    finally:
        await store.aclose()
    return n / (time.perf_counter() - started)


def _queries(n: int, count: int) -> list[tuple[str, str]]:
    """(kind, q) pairs, the kinds taking turns."""
    rng = random.Random(1401)
    # By rank r, a word is in about 12 / (r * H) of the messages (H ≈ ln VOCABULARY + 0.58).
    picks = {
        "order number": lambda: str(1_000_000 + rng.randrange(n)),
        "rare word": lambda: f"w{rng.randrange(5_000, 8_000)}",
        "middling word": lambda: f"w{rng.randrange(150, 250)}",
        "common word": lambda: f"w{rng.randrange(5, 15)}",
        "two common words": lambda: f"w{rng.randrange(0, 10)} W{rng.randrange(10, 20)}",
    }
    return [(KINDS[k % len(KINDS)], picks[KINDS[k % len(KINDS)]]()) for k in range(count)]


async def _search(url: str, queries: list[tuple[str, str]]) -> dict[str, list[float]]:
    """Seconds per `messages_search` call, by kind."""
    store = await open_store(url)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        async with open_inbox(store, sms=OutboxSms(), mail=OutboxMail()) as inbox:
            await inbox.messages_search("w1")  # warm the readers
            for kind, q in queries:
                t = time.perf_counter()
                page = await inbox.messages_search(q)
                times[kind].append(time.perf_counter() - t)
                assert kind != "order number" or len(page.results) == 1, q  # its own message
    finally:
        await store.aclose()
    return times


def _bare_fts(path: Path, queries: list[tuple[str, str]]) -> list[float]:
    conn = sqlite3.connect(path)
    try:
        times = []
        for _, q in queries:
            t = time.perf_counter()
            conn.execute(
                "SELECT rowid FROM text_words WHERE text_words MATCH ? LIMIT 20",
                (match_expression(q),),
            ).fetchall()
            times.append(time.perf_counter() - t)
        return times
    finally:
        conn.close()


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


@scenario("search", repeats=1, quick_repeats=1)
def search(quick: bool, progress: Progress) -> list[Row]:
    """messages.search latency over 1,000,000 stored messages on SQLite (median, p99)."""
    n = 5_000 if quick else FULL
    count = 50 if quick else QUERIES
    with tempfile.TemporaryDirectory(prefix="tidings-search-") as tmp:
        path = Path(tmp) / "search.db"
        url = f"sqlite:///{path}"
        progress(0.0, f"writing {n:,} messages")
        write_rate = trio.run(_write, url, n, progress)
        queries = _queries(n, count)
        progress(0.8, f"{count} searches")
        by_kind = trio.run(_search, url, queries)
        progress(0.95, "bare FTS5 baseline")
        bare = _bare_fts(path, queries)
        size_mb = path.stat().st_size / 1e6
    progress(1.0, "done")
    every = [t for kind in KINDS for t in by_kind[kind]]
    ms = 1000.0
    median_name = f"messages.search over {n:,} messages, median of {count} queries"
    p99_name = f"messages.search over {n:,} messages, p99"
    note = f"store file {size_mb:,.0f} MB; queries: {', '.join(KINDS)} in turn"
    rows = [
        row(f"bulk write of {n:,} messages with their index entries", write_rate, "msgs/s"),
        row(median_name, statistics.median(every) * ms, "ms", better="lower", note=note),
        row(p99_name, _p99(every) * ms, "ms", better="lower"),
        row("bare FTS5 MATCH LIMIT 20, median (vs median)", statistics.median(bare) * ms, "ms",
            better="lower", baseline_of=median_name),
        row("bare FTS5 MATCH LIMIT 20, p99 (vs p99)", _p99(bare) * ms, "ms",
            better="lower", baseline_of=p99_name),
    ]  # fmt: skip
    rows += [
        row(f"messages.search median, {kind}", statistics.median(by_kind[kind]) * ms, "ms",
            better="lower")
        for kind in KINDS
    ]  # fmt: skip
    return rows
