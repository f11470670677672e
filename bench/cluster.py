"""Scenario ``cluster``: several ``tidings serve`` nodes on one Redis (issue 12).

Throughput: 1, 2 and 3 real ``tidings serve`` processes (``--node n0…``) on one private
``redis-server`` (AOF, appendfsync always), each run on a flushed database; the signed
inbound SMS webhooks of scenario ``webhook`` (``hammer``) spread round-robin over the
nodes' ``/sms/inbound``. Figures: requests/s and p99, and the ratio of 2 and 3 nodes to
one node (the baseline, same run). Every answer must be 200.

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
from pathlib import Path
from typing import Any

import httpx
import trio

from tidings.bench.harness import Progress, Row, row, scenario
from tidings.bench.pipeline import _redis_server
from tidings.bench.webhook import AUTH_TOKEN, CONFIG, hammer, signed_requests
from tidings.bench.websocket import tidings_serve

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


async def _spread(bases: list[str], concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 ms) of signed webhooks from `concurrency` clients spread evenly
    over the nodes at `bases` (the p99 is the worst node's)."""
    loads: list[Any] = []
    per_node = max(1, concurrency // len(bases))
    count = int(per_node * seconds * 2000) + 100  # never reused at these rates

    async def one(k: int, base: str) -> None:
        url = base + "/sms/inbound"
        requests = signed_requests(url, (k + 1) * 10**8 + int(time.time() * 1000) % 10**7, count)
        loads.append(await hammer(url, requests, per_node, seconds))

    async with trio.open_nursery() as nursery:
        for k, base in enumerate(bases):
            nursery.start_soon(one, k, base)
    return sum(load.rate for load in loads), max(load.p99_ms for load in loads)


async def _throughput(
    url: str, config: Path, nodes: int, concurrency: int, seconds: float
) -> tuple[float, float]:
    """(requests/s, p99 ms) of webhooks spread over `nodes` fresh nodes on `url`."""
    async with AsyncExitStack() as stack:
        bases = []
        for i in range(nodes):
            server = await stack.enter_async_context(
                tidings_serve("--config", str(config), "--node", f"n{i}", store=url)
            )
            bases.append(server.base)
        return await _spread(bases, concurrency, seconds)


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
            async with trio.open_nursery() as nursery:

                async def load(survivors: list[str] = survivors) -> None:
                    p99.append((await _spread(survivors, concurrency, LEASE + 3))[1])

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
    """Inbound SMS on 1/2/3 nodes sharing one Redis (ratio to one), and failover times."""
    concurrency, seconds, kills = QUICK if quick else FULL
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tidings-cluster-") as tmp:
        server = _redis_server(Path(tmp) / "redis")
        if isinstance(server, str):
            raise SystemExit(f"the cluster benchmark needs a redis-server: {server}")
        config = _config(Path(tmp))
        try:
            results: dict[int, tuple[float, float]] = {}
            for n in (1, 2, 3):
                progress((n - 1) / 4, f"{n} node(s)")
                server.flush()
                results[n] = trio.run(_throughput, server.url, config, n, concurrency, seconds)
            progress(0.75, "failover")
            server.flush()
            times, p99 = trio.run(_failover, server.url, config, concurrency, kills)
        finally:
            server.stop()
    label = f"{concurrency} concurrent, {SHARDS} shards"
    one = f"1 node, webhooks/s, {label}"
    rows.append(row(one, results[1][0], "req/s"))
    for n in (2, 3):
        name = f"{n} nodes, webhooks/s, {label}"
        rows += [
            row(name, results[n][0], "req/s"),
            row(f"1 node (vs {n})", results[1][0], "req/s", baseline_of=name),
        ]
    for n in (1, 2, 3):
        rows.append(row(f"{n} node(s), webhook p99", results[n][1], "ms", better="lower"))
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
