"""Scenario `recovery`: starting an inbox on a SQLite store that already holds many tickets.

Setup: `N` (1,000,000; quick: 20,000) stored SMS tickets written straight into a SQLite
store in batches of `BATCH` (`Batch.put` of each ``ticket:{id}`` record plus its
``tickets`` and ``waiting`` index entries, the layout `TicketActor._commit` writes), as
open unread tickets, then the store is closed. Then, `STARTS` times on that file (warm OS page cache):

- (a) `open_store("sqlite:///...")` + `open_inbox(...)` until the inbox is ready: lazy
  activation, so start-up must not depend on `N` (no ticket is loaded; the resident
  actor count after start is checked to be 0),
- (b) the first `receive_sms` after start, until answered (new phone: directory,
  profile and ticket actors activated, three commits),

each reported as the median of the `STARTS` starts. Baseline: `sqlite3.connect` of the
raw file and ``SELECT 1``. Also `tickets_list(state="open", unread=True, limit=50)` over the
`N` tickets (median of 20 calls), the issue-3 scale check at the store's full size.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import trio

from tidings.actors.inbox import open_inbox
from tidings.actors.model import Ticket, encode, iso
from tidings.actors.ticket import TICKETS, WAITING, TicketRecord
from tidings.bench.harness import Progress, Row, row, scenario
from tidings.engine import Batch
from tidings.engine.store import open_store
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

BATCH = 5_000
# Written through `SqliteStore.commit` at about 12,000 tickets/s on 2 cores (each index
# entry is ~10 statements: members, tags, tag and pair counts): ~80 s for the full run.
FULL = 1_000_000
STARTS = 5
TAGS = frozenset({"state=open", "unread=1", "channel=sms"})


async def _write(url: str, n: int, progress: Progress) -> float:
    """Write `n` open unread SMS tickets; return tickets/s."""
    store = await open_store(url)
    base = time.time() - n  # one ticket a second, up to now
    started = time.perf_counter()
    try:
        for start in range(0, n, BATCH):
            batch = Batch()
            for i in range(start, min(start + BATCH, n)):
                at = base + i
                tid = f"t{i:08d}"
                ticket = Ticket(
                    id=tid,
                    profile=f"p{i:08d}",
                    channel="sms",
                    state="open",
                    unread=True,
                    snoozed_until=None,
                    created_at=iso(at),
                    last_activity_at=iso(at),
                )
                record = TicketRecord(
                    ticket, at, at, phone=f"+1444{i:07d}", first_inbound_at=at, waiting_since=at
                )
                batch.put(f"ticket:{tid}", encode(record))
                batch.index(TICKETS, tid, at, TAGS)
                batch.index(WAITING, tid, at, TAGS)
            await store.commit(batch)
            progress(0.7 * (start + BATCH) / n, f"writing {n:,} tickets")
    finally:
        await store.aclose()
    return n / (time.perf_counter() - started)


async def _start_once(url: str, k: int, list_calls: int) -> tuple[float, float, float]:
    """(open + ready seconds, first receive_sms seconds, tickets_list median seconds)."""
    t0 = time.perf_counter()
    store = await open_store(url)
    try:
        async with open_inbox(store, sms=OutboxSms(), mail=OutboxMail()) as inbox:
            t1 = time.perf_counter()
            resident = inbox.engine.resident
            assert resident == 0, f"{resident} actors resident right after start"
            await inbox.receive_sms(f"SMrecovery{k}-{time.time_ns()}", f"+1333{k:07d}", "hello?")
            t2 = time.perf_counter()
            times = []
            for _ in range(list_calls):
                t = time.perf_counter()
                page = await inbox.tickets_list(state="open", unread=True, limit=50)
                times.append(time.perf_counter() - t)
                assert len(page.tickets) == 50
    finally:
        await store.aclose()
    return t1 - t0, t2 - t1, statistics.median(times) if times else 0.0


def _raw_open(path: Path) -> float:
    t0 = time.perf_counter()
    conn = sqlite3.connect(path)
    try:
        conn.execute("SELECT 1").fetchone()
        return time.perf_counter() - t0
    finally:
        conn.close()


@scenario("recovery", repeats=1, quick_repeats=1)
def recovery(quick: bool, progress: Progress) -> list[Row]:
    """Start-up and first inbound SMS on a SQLite store of many tickets (lazy activation)."""
    n = 20_000 if quick else FULL
    with tempfile.TemporaryDirectory(prefix="tidings-recovery-") as tmp:
        path = Path(tmp) / "recovery.db"
        url = f"sqlite:///{path}"
        progress(0.0, f"writing {n:,} tickets")
        write_rate = trio.run(_write, url, n, progress)
        opens, firsts, lists, raws = [], [], [], []
        for k in range(STARTS):
            progress(0.7 + 0.3 * k / STARTS, f"start {k + 1}/{STARTS}")
            ready, first, listed = trio.run(_start_once, url, k, 20 if k == 0 else 0)
            opens.append(ready)
            firsts.append(first)
            if k == 0:
                lists.append(listed)
            raws.append(_raw_open(path))
        size_mb = path.stat().st_size / 1e6
    progress(1.0, "done")
    open_name = f"open_store + open_inbox ready, {n:,} stored tickets"
    first_name = f"first receive_sms after start, {n:,} stored tickets"
    raw_note = f"median of {STARTS} starts on the same file ({size_mb:,.0f} MB), warm page cache"
    return [
        row(f"bulk write of {n:,} tickets (batches of {BATCH:,})", write_rate, "tickets/s"),
        row(open_name, statistics.median(opens), "s", better="lower", note=raw_note),
        row(
            "raw sqlite3.connect + SELECT 1 (vs open)",
            statistics.median(raws),
            "s",
            baseline_of=open_name,
            better="lower",
        ),
        row(
            first_name,
            statistics.median(firsts),
            "s",
            better="lower",
            note="new phone: directory + profile + ticket activated, 3 commits before the answer",
        ),
        row(
            "raw sqlite3.connect + SELECT 1 (vs first receive_sms)",
            statistics.median(raws),
            "s",
            baseline_of=first_name,
            better="lower",
        ),
        row(
            f"tickets_list(open, unread, 50) over {n:,} stored tickets",
            statistics.median(lists) * 1e3,
            "ms",
            better="lower",
            note="median of 20 calls after the first start",
        ),
    ]
