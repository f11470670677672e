"""Scenario ``cluster``: several ``tidings serve`` nodes on one Redis (issue 12).

Throughput: 1, 2 and 3 real ``tidings serve`` processes (``--node n0…``) on one private
``redis-server`` (AOF, appendfsync always), each run on a flushed database; the signed
inbound SMS webhooks of scenario ``webhook`` (``hammer``) spread round-robin over the
nodes' ``/sms/inbound``, all nodes' loads for the same seconds, signed before they start.
Figures: requests/s and p99 (the worst node's), and the ratio of 2 and 3 nodes to one node
(the baseline, same run); CPU time per webhook of each node process (``/proc``, over the
webhooks posted to it: it also does the work other nodes forward to its shards), of all
nodes together and of the ``redis-server`` process. Every answer must be 200.

Failover: with three nodes under the same load, one node at a time is killed with
SIGKILL; measured is the time from the kill until the two others hold every shard
(``tidings_shards_owned`` summed over their ``/metrics``), then the killed node is
started again under its name and the next one is killed once it holds its shards again.
Reported: the median and the worst of the failover times, against the lease time, and
the p99 of the webhooks posted to the surviving nodes while the kills go on.

The client, the nodes and Redis share the machine's cores, so more nodes on 2 cores
cannot scale linearly; the ratios show what placement and mail between nodes cost, not
what more machines would give (see README, "Several nodes on one Redis").
"""

from __future__ import annotations

import re
import signal
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from tidings.bench.harness import Progress, Row, row, scenario
from tidings.bench.pipeline import _redis_server
from tidings.bench.webhook import AUTH_TOKEN, CONFIG, Load, hammer, signed_requests
from tidings.bench.websocket import cpu_seconds, tidings_serve

SHARDS = 64
LEASE = 2.0
FULL = (32, 3.0, 10)  # (concurrency, seconds per node count, kills)
QUICK = (8, 1.0, 2)


def _config(directory: Path) -> Path:
    path = directory / "cluster.toml"
    webhook = CONFIG.format(token=AUTH_TOKEN, provider="", mode="everyone")
    path.write_text(webhook + f"\n[cluster]\nshards = {SHARDS}\nlease = {LEASE}\n")
    return path


async def _shards_owned(client: httpx.AsyncClient, base: str) -> int:
    try:
        text = (await client.get(base + "/metrics")).text
    except httpx.HTTPError:
        return 0
    found = re.search(r"^tidings_shards_owned (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


IDLE_S = 1.0  # seconds the nodes' CPU is measured with no load, before it
PER_NODE_RATE = 2_000  # requests/s per node the pre-signed requests are sized for


@dataclass
class Spread:
    """One load spread over the nodes, and what it cost them and Redis."""

    rate: float  # requests/s, all nodes together
    p99_ms: float  # the worst node's
    requests: list[int]  # answered, per node
    reused: int  # requests sent again after the pre-signed ones ran out (deduplicated)
    node_cpu_s: list[float] = field(default_factory=list)  # per node, during the load
    redis_cpu_s: float = 0.0
    idle_cpu: list[float] = field(default_factory=list)  # per node, CPU s per s, no load


def _sign(bases: list[str], seconds: float) -> list[list[tuple[str, bytes]]]:
    """Signed webhooks for `seconds` of load on each node at `bases` (new MessageSids).

    Signing is synchronous (some 25 µs a request, HMAC-SHA1), so it is done before any
    load starts: signed inside the load of one node, as it once was, it stalled the loads
    already running on the others for seconds; their workers found their time up before
    sending a request, and an empty latency list made the p99 rows ``nan``.
    """
    count = int(PER_NODE_RATE * seconds) + 100
    first = int(time.time() * 1000) % 10**7  # fresh MessageSids on every call
    return [
        signed_requests(base + "/sms/inbound", (k + 1) * 10**8 + first, count)
        for k, base in enumerate(bases)
    ]


async def _load(
    bases: list[str], batches: list[list[tuple[str, bytes]]], concurrency: int, seconds: float
) -> Spread:
    """`concurrency` clients spread evenly over the nodes at `bases`, all for the same
    `seconds`, posting the pre-signed `batches` (one per node)."""
    per_node = max(1, concurrency // len(bases))
    loads: list[Load | None] = [None] * len(bases)

    async def one(k: int) -> None:
        url = bases[k] + "/sms/inbound"
        loads[k] = await hammer(url, batches[k], per_node, seconds)

    async with trio.open_nursery() as nursery:
        for k in range(len(bases)):
            nursery.start_soon(one, k)
    done = [load for load in loads if load is not None]
    for base, load in zip(bases, done, strict=True):
        if load.requests == 0:
            raise RuntimeError(f"{base}: no webhook answered within {seconds:g} s")
    return Spread(
        rate=sum(load.rate for load in done),
        p99_ms=max(load.p99_ms for load in done),
        requests=[load.requests for load in done],
        reused=sum(load.reused for load in done),
    )


async def _throughput(
    url: str, redis_pid: int, config: Path, nodes: int, concurrency: int, seconds: float
) -> Spread:
    """Webhooks spread over `nodes` fresh nodes on `url`, with each node's CPU time and
    that of the redis-server (`redis_pid`) over the load."""
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                tidings_serve("--config", str(config), "--node", f"n{i}", store=url)
            )
            for i in range(nodes)
        ]
        bases = [server.base for server in servers]
        pids = [server.process.pid for server in servers]
        batches = _sign(bases, seconds)
        before = [cpu_seconds(pid) for pid in pids]
        await trio.sleep(IDLE_S)
        idle = [(cpu_seconds(pid) - b) / IDLE_S for pid, b in zip(pids, before, strict=True)]
        before, redis_before = [cpu_seconds(pid) for pid in pids], cpu_seconds(redis_pid)
        spread = await _load(bases, batches, concurrency, seconds)
        spread.node_cpu_s = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        spread.redis_cpu_s = cpu_seconds(redis_pid) - redis_before
        spread.idle_cpu = idle
        return spread


async def _failover(
    url: str, config: Path, concurrency: int, kills: int
) -> tuple[list[float], float]:
    """Failover times (s) of `kills` SIGKILLs, and the webhook p99 (ms) meanwhile."""
    times: list[float] = []
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=5) as client:
        servers: list[Any] = []
        for i in range(3):
            servers.append(
                await stack.enter_async_context(
                    tidings_serve("--config", str(config), "--node", f"n{i}", store=url)
                )
            )
        p99: list[float] = []
        for k in range(kills):
            victim = k % 3
            survivors = [s.base for i, s in enumerate(servers) if i != victim]
            batches = _sign(survivors, LEASE + 3)
            async with trio.open_nursery() as nursery:

                async def load(
                    survivors: list[str] = survivors,
                    batches: list[list[tuple[str, bytes]]] = batches,
                ) -> None:
                    p99.append((await _load(survivors, batches, concurrency, LEASE + 3)).p99_ms)

                nursery.start_soon(load)
                await trio.sleep(0.5)
                servers[victim].process.send_signal(signal.SIGKILL)
                killed = time.perf_counter()
                while True:  # polled: the shards move in another process
                    if sum([await _shards_owned(client, b) for b in survivors]) == SHARDS:
                        break
                    await trio.sleep(0.05)
                times.append(time.perf_counter() - killed)
            servers[victim] = await stack.enter_async_context(
                tidings_serve("--config", str(config), "--node", f"n{victim}", store=url)
            )
        return times, max(p99)


@scenario("cluster", repeats=1, quick_repeats=1)
def cluster(quick: bool, progress: Progress) -> list[Row]:
    """Inbound SMS on 1/2/3 nodes sharing one Redis (ratio to one), CPU per webhook of each
    node and of Redis, and failover times."""
    concurrency, seconds, kills = QUICK if quick else FULL
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tidings-cluster-") as tmp:
        server = _redis_server(Path(tmp) / "redis")
        if isinstance(server, str):
            raise SystemExit(f"the cluster benchmark needs a redis-server: {server}")
        config = _config(Path(tmp))
        try:
            results: dict[int, Spread] = {}
            for n in (1, 2, 3):
                progress((n - 1) / 4, f"{n} node(s)")
                server.flush()
                results[n] = trio.run(
                    _throughput, server.url, server.pid, config, n, concurrency, seconds
                )
            progress(0.75, "failover")
            server.flush()
            times, p99 = trio.run(_failover, server.url, config, concurrency, kills)
        finally:
            server.stop()
    label = f"{concurrency} concurrent, {SHARDS} shards"
    one = f"1 node, webhooks/s, {label}"
    rows.append(row(one, results[1].rate, "req/s", note=_reused(results[1])))
    for n in (2, 3):
        name = f"{n} nodes, webhooks/s, {label}"
        rows += [
            row(name, results[n].rate, "req/s", note=_reused(results[n])),
            row(f"1 node (vs {n})", results[1].rate, "req/s", baseline_of=name),
        ]
    for n in (1, 2, 3):
        rows.append(row(f"{n} node(s), webhook p99", results[n].p99_ms, "ms", better="lower"))
    for n in (1, 2, 3):
        rows += _cpu_rows(n, results[n])
    rows += [
        row(
            f"failover: kill to every shard served, median of {kills}",
            statistics.median(times),
            "s",
            better="lower",
            note=f"lease {LEASE:g} s; worst {max(times):.2f} s",
        ),
        row("webhook p99 on the survivors during failovers", p99, "ms", better="lower"),
    ]
    return rows


def _reused(spread: Spread) -> str | None:
    if not spread.reused:
        return None
    return f"{spread.reused} requests were sent again (MessageSids already seen: deduplicated)"


def _cpu_rows(n: int, spread: Spread) -> list[Row]:
    """CPU µs per webhook: of each node (over the webhooks posted to it; it also serves
    the mail other nodes forward to its shards), of all nodes together, and of Redis."""
    total = sum(spread.requests)
    per_node = zip(spread.node_cpu_s, spread.requests, spread.idle_cpu, strict=True)
    rows = [
        row(
            f"{n} node(s), CPU per webhook, node n{i}",
            cpu / requests * 1e6,
            "µs",
            better="lower",
            note=f"{cpu:.2f} CPU s over {requests} webhooks posted to it; "
            f"with no load ({IDLE_S:g} s before) it used {idle:.1%} of a core",
        )
        for i, (cpu, requests, idle) in enumerate(per_node)
    ]
    if n > 1:
        rows.append(
            row(
                f"{n} node(s), CPU per webhook, all nodes",
                sum(spread.node_cpu_s) / total * 1e6,
                "µs",
                better="lower",
            )
        )
    rows.append(
        row(
            f"{n} node(s), Redis CPU per webhook",
            spread.redis_cpu_s / total * 1e6,
            "µs",
            better="lower",
            note=f"{spread.redis_cpu_s:.2f} CPU s of redis-server (AOF, appendfsync always)",
        )
    )
    return rows
