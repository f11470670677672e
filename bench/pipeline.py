"""Scenario `pipeline`: inbound SMS through the whole inbox, per store, vs a raw trio chain.

Engine: `M` inbound SMS from `P` phones (message `i` from phone `i % P`, so every profile
gets `M / P` messages; the first one of each phone also makes its profile and its SMS
ticket), sent by `SENDERS` concurrent tasks each calling `inbox.receive_sms(...)` in turn,
on an in-process inbox (`open_inbox`) with the autoresponder `off` (so each SMS is
directory → profile → ticket → event, and no outbound message is written). A subscriber task
on `inbox.events(since)` records when each `message.created` event arrives, by message id.
Figures: messages/s (first send to last event seen) and the latency from the start of the
`receive_sms` call to the subscriber seeing its event (p50, p99), on stores

- ``memory://``,
- ``sqlite:///<tmp>/pipeline.db`` (WAL, synchronous=FULL, group commit),
- ``redis://`` on a private `redis-server` (AOF, appendfsync always) started in a
  temporary directory on a free port (skipped, with a note, if redis-server is missing),
- the same Redis with the inbox as one node of a cluster (`engine.placement`: it holds all
  256 shards, and every commit carries and checks its fencing token): the cost of
  placement on one node is this row against the plain Redis row.

Baseline (same run, same message count and senders): a raw trio chain of three tasks
joined by memory channels, transport (the senders) → profile → ticket → subscriber,
each hop msgspec-decoding the JSON it receives and encoding what it passes on; nothing is
stored. Ratio engine ÷ baseline per store.

Scale check (issue 3), on the SQLite inbox after its run (`P` profiles, each with one open
unread SMS ticket): `tickets_list(state="open", unread=True, limit=50)` (median of 20 calls),
`badge_get()`, and resident actors after `engine.passivate_idle()` with a small idle
timeout once a small active set (`ACTIVE` profiles) has written again: memory follows the
active set, not the number of profiles.

One busy conversation (issue 13): `B` SMS from ONE phone on SQLite, so the senders' messages
wait in its SMS ticket's mailbox; with drains (the engine's default) the ticket stores each
run of waiting messages in one commit, against the same inbox with `drain_max=1` (one
commit per message) as the baseline, in the same run.

One repetition by default: the full run takes about 10 minutes on 2 cores (SQLite and
Redis at under 1,000 SMS/s); its latencies are percentiles over all 200,000 messages.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import trio

from tidings.actors.inbox import Inbox, open_inbox
from tidings.bench.harness import Progress, Row, row, scenario
from tidings.bench.redis_server import RedisServer
from tidings.engine.placement import Placement
from tidings.engine.store import Store, open_store
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.redis_shards import ShardStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

SENDERS = 200
PLACED = "redis, one placed node"
ACTIVE = 100  # profiles that write again just before the passivation check
AUTORESPONDER_OFF = {"sms": {"autoresponder": {"mode": "off"}}}
NOTE_OFF = "autoresponder off (no outbound SMS per inbound)"


def phone(i: int) -> str:
    """The phone number of profile `i`."""
    return f"+1555{i:07d}"


class _MsgId(msgspec.Struct):
    id: str


class _EventData(msgspec.Struct):
    message: _MsgId | None = None


class _Event(msgspec.Struct):
    event: str
    data: _EventData


_decode_event = msgspec.json.Decoder(_Event).decode


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Result(msgspec.Struct):
    """One run: rate and latencies (seconds)."""

    rate: float
    p50: float
    p99: float


# -- engine ------------------------------------------------------------------------------


@asynccontextmanager
async def store_at(url: str) -> AsyncIterator[Store]:
    """`open_store(url)`, closed on exit."""
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.aclose()


async def _drive(
    inbox: Inbox,
    n_msgs: int,
    n_profiles: int,
    senders: int,
    on_progress: Callable[[float], None] | None = None,
) -> Result:
    """Send `n_msgs` SMS from `senders` tasks; wait for every `message.created` event."""
    starts = [0.0] * n_msgs
    ids: list[str] = [""] * n_msgs
    arrivals: dict[str, float] = {}
    all_seen = trio.Event()
    since = inbox.last_seq
    clock = time.perf_counter

    async def subscriber(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for _, payload in inbox.events(since):
            ev = _decode_event(payload)
            if ev.event == "message.created" and ev.data.message is not None:
                arrivals[ev.data.message.id] = clock()
                if len(arrivals) == n_msgs:
                    all_seen.set()
                    return

    async def sender(k: int) -> None:
        receive = inbox.receive_sms
        for i in range(k, n_msgs, senders):
            starts[i] = clock()
            message = await receive(f"SM{i:09d}", phone(i % n_profiles), f"help with order {i}")
            ids[i] = message.id
            if on_progress is not None and k == 0 and i % (senders * 200) == 0:
                on_progress(i / n_msgs)

    async with trio.open_nursery() as nursery:
        await nursery.start(subscriber)
        started = clock()
        async with trio.open_nursery() as senders_nursery:
            for k in range(senders):
                senders_nursery.start_soon(sender, k)
        await all_seen.wait()
        elapsed = max(arrivals.values()) - started
    latencies = [arrivals[ids[i]] - starts[i] for i in range(n_msgs)]
    return Result(n_msgs / elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))


async def _scale_check(inbox: Inbox, n_profiles: int) -> dict[str, float]:
    """tickets_list / badge_get timings and resident actors before/after passivation."""
    out: dict[str, float] = {}
    times = []
    for _ in range(20):
        t = time.perf_counter()
        page = await inbox.tickets_list(state="open", unread=True, limit=50)
        times.append(time.perf_counter() - t)
        assert len(page.tickets) == min(50, n_profiles), len(page.tickets)
    out["list_ms"] = statistics.median(times) * 1e3
    badge_times = []
    for _ in range(20):
        t = time.perf_counter_ns()
        badge = inbox.badge_get()
        badge_times.append((time.perf_counter_ns() - t) / 1e3)
    assert badge == n_profiles, (badge, n_profiles)
    out["badge_us"] = statistics.median(badge_times)
    out["resident_before"] = inbox.engine.resident
    # Everything written so far goes idle; then a small active set writes again.
    await trio.sleep(1.0)
    for i in range(ACTIVE):
        await inbox.receive_sms(f"SMactive{i}", phone(i), "still there?")
    inbox.engine.idle_timeout = 0.5  # the active set wrote well within this
    out["passivated"] = await inbox.engine.passivate_idle()
    out["resident_after"] = inbox.engine.resident
    return out


async def _engine_run(
    url: str,
    n_msgs: int,
    n_profiles: int,
    scale: bool,
    on_progress: Callable[[float], None] | None = None,
    placed: bool = False,
    drain_max: int = 64,
) -> tuple[Result, dict[str, float]]:
    async with store_at(url) as store:
        placement = None
        if placed:  # one node of a cluster: every write carries its fencing token
            assert isinstance(store, RedisStore)
            placement = Placement(ShardStore(store, "bench"))
        async with open_inbox(
            store,
            sms=OutboxSms(),
            mail=OutboxMail(),
            settings=AUTORESPONDER_OFF,
            placement=placement,
            drain_max=drain_max,
        ) as inbox:
            if placement is not None:
                await placement.ready.wait()
            result = await _drive(inbox, n_msgs, n_profiles, SENDERS, on_progress)
            extra = await _scale_check(inbox, n_profiles) if scale else {}
    return result, extra


# -- raw trio baseline -------------------------------------------------------------------


class _Inbound(msgspec.Struct):
    sid: str
    phone: str
    body: str
    sent: float


class _Routed(msgspec.Struct):
    sid: str
    profile: str
    ticket: str
    body: str
    sent: float


class _Created(msgspec.Struct):
    event: str
    sid: str
    ticket: str
    body: str
    sent: float


async def _raw_run(n_msgs: int, n_profiles: int, senders: int) -> Result:
    """transport (senders) → profile → ticket → subscriber, JSON decoded at every hop."""
    enc = msgspec.json.Encoder().encode
    dec_in = msgspec.json.Decoder(_Inbound).decode
    dec_routed = msgspec.json.Decoder(_Routed).decode
    dec_created = msgspec.json.Decoder(_Created).decode
    to_profile_tx, to_profile_rx = trio.open_memory_channel[bytes](senders)
    to_ticket_tx, to_ticket_rx = trio.open_memory_channel[bytes](senders)
    to_sub_tx, to_sub_rx = trio.open_memory_channel[bytes](senders)
    latencies: list[float] = []
    clock = time.perf_counter
    done = trio.Event()

    async def profile_task() -> None:
        profiles: dict[str, str] = {}
        async with to_ticket_tx:
            async for raw in to_profile_rx:
                m = dec_in(raw)
                pid = profiles.get(m.phone)
                if pid is None:
                    pid = profiles[m.phone] = f"p{len(profiles)}"
                await to_ticket_tx.send(enc(_Routed(m.sid, pid, "t" + pid, m.body, m.sent)))

    async def ticket_task() -> None:
        async with to_sub_tx:
            async for raw in to_ticket_rx:
                m = dec_routed(raw)
                event = _Created("message.created", m.sid, m.ticket, m.body, m.sent)
                await to_sub_tx.send(enc(event))

    async def subscriber() -> None:
        async for raw in to_sub_rx:
            ev = dec_created(raw)
            latencies.append(clock() - ev.sent)
            if len(latencies) == n_msgs:
                done.set()

    async def sender(k: int, tx: trio.MemorySendChannel[bytes]) -> None:
        async with tx:
            for i in range(k, n_msgs, senders):
                msg = _Inbound(f"SM{i:09d}", phone(i % n_profiles), f"help with order {i}", clock())
                await tx.send(enc(msg))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(profile_task)
        nursery.start_soon(ticket_task)
        nursery.start_soon(subscriber)
        started = clock()
        async with to_profile_tx, trio.open_nursery() as senders_nursery:
            for k in range(senders):
                senders_nursery.start_soon(sender, k, to_profile_tx.clone())
        await done.wait()
        elapsed = clock() - started
    return Result(n_msgs / elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))


# -- redis -------------------------------------------------------------------------------


def _redis_server(directory: Path) -> RedisServer | str:
    """A private redis-server started in `directory`, or the reason why there is none."""
    try:
        server = RedisServer(directory)
    except FileNotFoundError:
        return "redis-server is not installed"
    server.start()
    return server


# -- the scenario --------------------------------------------------------------------------


@scenario("pipeline", repeats=1, quick_repeats=1)
def pipeline(quick: bool, progress: Progress) -> list[Row]:
    """Inbound SMS end to end (receive_sms → message.created) per store vs a raw trio chain."""
    n_msgs, n_profiles = (5_000, 500) if quick else (200_000, 10_000)
    size = f"{n_msgs:,} SMS / {n_profiles:,} profiles, {SENDERS} senders"
    rows: list[Row] = []

    progress(0.0, "raw trio chain")
    raw = trio.run(_raw_run, n_msgs, n_profiles, SENDERS)
    with tempfile.TemporaryDirectory(prefix="tidings-pipeline-") as tmp:
        server = _redis_server(Path(tmp) / "redis")
        redis_url = None if isinstance(server, str) else server.url
        stores: list[tuple[str, str | None]] = [
            ("memory", "memory://"),
            ("sqlite", f"sqlite:///{tmp}/pipeline.db"),
            ("redis", redis_url),
            (PLACED, redis_url),
        ]
        try:
            for n, (name, url) in enumerate(stores):
                base = n / len(stores)
                if url is None:
                    continue

                def report(fraction: float, base: float = base, name: str = name) -> None:
                    progress(base + fraction / len(stores), f"engine on {name}")

                report(0.0)
                if name == PLACED and not isinstance(server, str):
                    server.flush()
                result, extra = trio.run(
                    _engine_run, url, n_msgs, n_profiles, name == "sqlite", report, name == PLACED
                )
                rate_name = f"engine on {name}, {size}"
                note = NOTE_OFF if name == "memory" else None
                if name == "memory" and isinstance(server, str):
                    note = f"{NOTE_OFF}; redis rows skipped: {server}"
                if name == "redis":
                    note = "private redis-server, AOF appendfsync always"
                if name == PLACED:
                    note = "one node holding all 256 shards: every commit checks its fencing token"
                rows += [
                    row(rate_name, result.rate, "msgs/s", note=note),
                    row(
                        f"raw trio chain (vs {name})",
                        raw.rate,
                        "msgs/s",
                        baseline_of=rate_name,
                        note="3 tasks + memory channels, msgspec JSON decode/encode per hop",
                    ),
                    row(f"engine on {name}, latency p50", result.p50 * 1e3, "ms", better="lower"),
                    row(
                        f"raw trio chain latency p50 (vs {name})",
                        raw.p50 * 1e3,
                        "ms",
                        baseline_of=f"engine on {name}, latency p50",
                        better="lower",
                    ),
                    row(f"engine on {name}, latency p99", result.p99 * 1e3, "ms", better="lower"),
                    row(
                        f"raw trio chain latency p99 (vs {name})",
                        raw.p99 * 1e3,
                        "ms",
                        baseline_of=f"engine on {name}, latency p99",
                        better="lower",
                    ),
                ]
                if extra:
                    on = f"sqlite, {n_profiles:,} open unread tickets"
                    rows += [
                        row(
                            f"tickets_list(open, unread, 50) on {on}",
                            extra["list_ms"],
                            "ms",
                            better="lower",
                            note="median of 20 calls",
                        ),
                        row(f"badge_get() on {on}", extra["badge_us"], "µs", better="lower"),
                        row(
                            f"resident actors after the run ({n_profiles:,} profiles)",
                            extra["resident_before"],
                            "actors",
                            better="lower",
                        ),
                        row(
                            f"resident actors after passivate_idle (active set {ACTIVE} profiles)",
                            extra["resident_after"],
                            "actors",
                            better="lower",
                            note="directory + profile + ticket actors of the active set remain",
                        ),
                    ]
            rows += _one_conversation(f"sqlite:///{tmp}/conversation", 2_000 if quick else 20_000)
        finally:
            if not isinstance(server, str):
                server.stop()
    progress(1.0, "done")
    return rows


def _one_conversation(url: str, n_msgs: int) -> list[Row]:
    """`n_msgs` SMS from one phone on SQLite, with drains and without (`drain_max=1`)."""
    results = {
        drain_max: trio.run(_engine_run, f"{url}-{drain_max}.db", n_msgs, 1, False, None, False,
                            drain_max)[0]  # fmt: skip
        for drain_max in (1, 64)
    }
    name = f"engine on sqlite, one conversation ({n_msgs:,} SMS from one phone, {SENDERS} senders)"
    return [
        row(f"{name}, drains", results[64].rate, "msgs/s", note="drain_max=64 (the default)"),
        row(
            f"{name}, one commit per message",
            results[1].rate,
            "msgs/s",
            baseline_of=f"{name}, drains",
            note="drain_max=1",
        ),
        row(f"{name}, drains, latency p99", results[64].p99 * 1e3, "ms", better="lower"),
        row(
            f"{name}, one commit per message, latency p99",
            results[1].p99 * 1e3,
            "ms",
            baseline_of=f"{name}, drains, latency p99",
            better="lower",
        ),
    ]
