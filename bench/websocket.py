"""Scenario ``websocket``: web chat visitors on a real ``tidings serve``, against a bare echo.

The engine runs as a real ``tidings serve --port 0 --store memory://`` subprocess (the
in-memory store, so the figure is the transports and the actors, not a disk). One agent
connects to ``/ws/agent`` (with ``tidings.client``) as the demo agent and ``subscribe``s; then
``N`` visitors connect to ``/ws/chat``, say ``hello`` and each send one warm-up message
(which creates their ticket), 64 at a time. Once the agent has seen every warm-up
message, the timed phase sends ``rate × seconds`` messages open-loop at ``rate`` msg/s in
total: message ``k`` is due at ``t0 + k / rate`` and is sent by visitor ``k mod N`` (so a
visitor sends ``rate / N`` msg/s, far below the server's 50 frames/s per connection).
Every visitor reads its own frames in its own task. Measured:

- throughput: timed acks received ÷ (last ack − first send),
- visitor-to-agent latency: from just before the visitor sends a message to the agent
  receiving the ``message.created`` event for it (matched by its unique body), p50/p99.

Baseline, same run and same workload: a bare trio-websocket echo server in its own
subprocess (it sends every frame back), ``N`` clients with the same warm-up and schedule;
its throughput is echoes/s and its latency the client's round trip. The clients of both
run in this process, with this process's trio and trio-websocket: on a 2-core machine
they share the CPU with the server, which the ratio shares too (but the engine's run also
has the agent's event stream to read: ``message.created``, ``ticket.updated``, … per message).
"""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tidings.bench.harness import Progress, Row, row, scenario
from tidings.client import open_agent_client

ROOT = Path(__file__).resolve().parents[1]
# Connections being opened (and warmed up) at the same time: below the engine's 64
# workers, whose pool a burst of more concurrent chat messages can starve (see the report).
CONNECT_AT_ONCE = 32
DRAIN_S = 15.0  # how long after the last send to wait for late acks and events
STARTUP_S = 30.0

FULL = ((1_000, 2_000, 3.0), (5_000, 2_000, 3.0))  # (visitors, msg/s, seconds)
QUICK = ((100, 200, 1.0),)


# -- subprocesses -------------------------------------------------------------------------


def raise_fd_limit(connections: int) -> None:
    """Let this process (and the servers it starts, which inherit it) hold the sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * connections + 512
    if soft != resource.RLIM_INFINITY and soft < want:
        top = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


@dataclass
class Server:
    """A server subprocess and the `name: value` lines it printed when it started."""

    process: trio.Process
    lines: dict[str, str]

    @property
    def base(self) -> str:
        """``http://H:P`` (no trailing slash)."""
        return self.lines["console"].rstrip("/")

    @property
    def ws_base(self) -> str:
        """``ws://H:P``."""
        return self.base.replace("http://", "ws://", 1)


async def _read_lines(proc: trio.Process, wanted: tuple[str, ...], log: Path) -> dict[str, str]:
    assert proc.stdout is not None
    buffer = b""
    lines: dict[str, str] = {}
    with trio.move_on_after(STARTUP_S) as cs:
        while not all(w in lines for w in wanted):
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                break
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            for line in done:
                name, _, value = line.decode().partition(": ")
                lines[name.strip()] = value.strip()
    if not all(w in lines for w in wanted):
        why = "timed out" if cs.cancelled_caught else "exited"
        apath = trio.Path(log)
        tail = (await apath.read_text(errors="replace"))[-2000:] if await apath.exists() else ""
        raise RuntimeError(f"server {why} before printing {wanted}: {lines}\n{tail}")
    return lines


@asynccontextmanager
async def server_process(
    argv: list[str], wanted: tuple[str, ...], env: dict[str, str] | None = None
) -> Any:
    """Run ``python argv…`` (cwd: the repository) until the block ends; yields `Server`.

    It must print ``name: value`` lines including every name in `wanted`; its stderr goes
    to a temporary file that is shown if it fails to start. At the end it gets SIGTERM,
    then SIGKILL after 10 s.
    """
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        log = Path(tmp) / "stderr.txt"
        with log.open("wb") as err:
            async with trio.open_nursery() as nursery:
                proc: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        [sys.executable, *argv],
                        stdout=subprocess.PIPE,
                        stderr=err,
                        cwd=str(ROOT),
                        env={**os.environ, **(env or {})},
                        check=False,
                    )
                )
                try:
                    lines = await _read_lines(proc, wanted, log)
                    yield Server(proc, lines)
                finally:
                    with trio.CancelScope(shield=True):
                        if proc.returncode is None:
                            proc.send_signal(signal.SIGTERM)
                        with trio.move_on_after(10):
                            await proc.wait()
                        if proc.returncode is None:
                            proc.kill()
                            await proc.wait()
                    nursery.cancel_scope.cancel()


def tidings_serve(*extra: str, store: str = "memory://") -> Any:
    """`server_process` for ``tidings serve --port 0 --store STORE EXTRA…``."""
    argv = ["-m", "tidings.transports.cli", "serve", "--port", "0", "--store", store, *extra]
    return server_process(argv, ("console", "demo agent token", "api key"), UNLIMITED)


# Every simulated client connects from 127.0.0.1, so the per-address limits would cap
# the benchmark itself rather than measure the engine.
UNLIMITED = {
    "TIDINGS_LIMITS__CONNECTIONS_PER_IP": "1000000",
    "TIDINGS_LIMITS__NEW_SESSIONS_PER_IP_PER_MIN": "1000000",
}


ECHO_SERVER = """
import sys, trio
from trio_websocket import ConnectionClosed, serve_websocket

async def echo(request):
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass

async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
        print(f"console: http://127.0.0.1:{server.port}/", flush=True)

trio.run(main)
"""


# -- clients ------------------------------------------------------------------------------


class _Frame(msgspec.Struct):
    """The parts of any server frame the clients look at (others are ignored)."""

    type: str = ""
    client_id: str | None = None
    code: str = ""  # of error frames


_decode = msgspec.json.Decoder(_Frame).decode


def _parse(text: str | bytes) -> _Frame:
    try:
        return _decode(text)
    except msgspec.DecodeError:  # a frame whose fields are not the shape above
        return _Frame()


@dataclass
class Run:
    """One measurement: the schedule and what was seen."""

    visitors: int
    rate: float
    seconds: float
    messages: int = 0
    t0: float = 0.0  # trio clock time of message 0
    t0_perf: float = 0.0  # the same on the perf_counter clock
    sent: dict[str, float] = field(default_factory=dict)  # body -> perf_counter at send
    acked: dict[str, float] = field(default_factory=dict)  # body -> perf_counter at ack/echo
    delivered: dict[str, float] = field(default_factory=dict)  # body -> at agent (engine)
    warm_acks: int = 0
    warm_seen: int = 0  # warm-up messages the agent has seen
    warm_done: trio.Event = field(default_factory=trio.Event)
    agent_warm: trio.Event = field(default_factory=trio.Event)
    go: trio.Event = field(default_factory=trio.Event)
    all_in: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)
    agent_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    connect_errors: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error frames by code
    track_agent: bool = False

    def __post_init__(self) -> None:
        self.messages = max(1, round(self.rate * self.seconds))

    def check_done(self) -> None:
        if len(self.acked) >= self.messages and (
            not self.track_agent or len(self.delivered) >= self.messages
        ):
            self.all_in.set()


def _message(body: str) -> str:
    return msgspec.json.encode({"type": "message", "body": body, "client_id": body}).decode()


async def _visitor_reader(ws: WebSocketConnection, run: Run, warm: trio.Event) -> None:
    try:
        while True:
            frame = _parse(await ws.get_message())
            cid = frame.client_id  # acks, and echoed message frames
            if frame.type == "error":
                run.errors[frame.code] = run.errors.get(frame.code, 0) + 1
            if frame.type not in ("ack", "message") or cid is None:
                continue
            if cid.startswith("w-"):
                warm.set()
            elif cid in run.sent and cid not in run.acked:
                run.acked[cid] = time.perf_counter()
                run.check_done()
    except ConnectionClosed:
        pass


async def _visitor(url: str, v: int, run: Run, gate: trio.Semaphore, hello: str | None) -> None:
    try:
        async with AsyncExitStack() as stack:
            async with gate:
                ws = await stack.enter_async_context(
                    open_websocket_url(url, connect_timeout=60, disconnect_timeout=5)
                )
                if hello is not None:
                    await ws.send_message(hello)
                    while _parse(await ws.get_message()).type != "ready":
                        pass
                warm = trio.Event()
                nursery = await stack.enter_async_context(trio.open_nursery())
                nursery.start_soon(_visitor_reader, ws, run, warm)
                await ws.send_message(_message(f"w-{v}"))
                await warm.wait()
            run.warm_acks += 1
            if run.warm_acks + run.connect_errors >= run.visitors:
                run.warm_done.set()
            await run.go.wait()
            for k in range(v, run.messages, run.visitors):
                await trio.sleep_until(run.t0 + k / run.rate)
                body = f"m-{k}"
                run.sent[body] = time.perf_counter()
                await ws.send_message(_message(body))
            await run.finished.wait()
            nursery.cancel_scope.cancel()
    except Exception:  # refused, reset, timed out: counted (trio.Cancelled is not one)
        run.connect_errors += 1
        if run.warm_acks + run.connect_errors >= run.visitors:
            run.warm_done.set()


async def _agent(url: str, token: str, run: Run, ready: trio.Event) -> None:
    async with open_agent_client(url, token) as agent:
        events = agent.subscribe(since=0)  # replays from the start: nothing sent is missed
        ready.set()
        with run.agent_scope:
            async for event in events:
                message = event.data.get("message") if event.event == "message.created" else None
                if not isinstance(message, dict):
                    continue
                body = message.get("body", "")
                if body.startswith("w-"):
                    run.warm_seen += 1
                    if run.warm_seen >= run.visitors - run.connect_errors:
                        run.agent_warm.set()
                elif body in run.sent and body not in run.delivered:
                    run.delivered[body] = time.perf_counter()
                    run.check_done()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Outcome:
    """The figures of one measurement."""

    rate: float  # acks (or echoes) per second
    p50_ms: float
    p99_ms: float
    lost: int  # timed messages without an ack/echo (or agent event) in time
    connected: int


async def _drive(
    url: str,
    run: Run,
    hello: str | None,
    progress: Callable[[str], None],
    agent: Callable[[trio.Event], Awaitable[None]] | None = None,
) -> Outcome:
    gate = trio.Semaphore(CONNECT_AT_ONCE)
    async with trio.open_nursery() as nursery:
        if agent is not None:
            ready = trio.Event()
            nursery.start_soon(agent, ready)
            await ready.wait()
        progress(f"connecting {run.visitors:,}")
        for v in range(run.visitors):
            nursery.start_soon(_visitor, url, v, run, gate, hello)
        with trio.move_on_after(300):
            await run.warm_done.wait()
            if agent is not None:
                await run.agent_warm.wait()
        connected = run.warm_acks
        if connected < run.visitors:
            run.finished.set()
            run.agent_scope.cancel()
            raise RuntimeError(
                f"only {connected:,} of {run.visitors:,} clients connected and warmed up "
                f"({run.connect_errors:,} failed)"
            )
        await trio.sleep(0.5)
        progress(f"{run.messages:,} messages at {run.rate:,.0f}/s")
        run.t0 = trio.current_time() + 0.2
        run.t0_perf = time.perf_counter() + 0.2
        run.go.set()
        with trio.move_on_at(run.t0 + run.seconds + DRAIN_S):
            await run.all_in.wait()
        run.finished.set()
        run.agent_scope.cancel()
    ended = time.perf_counter()
    first = min(run.sent.values(), default=0.0)
    # Over the whole wait when acks are missing: otherwise a stall would look fast.
    last = max(run.acked.values(), default=first) if len(run.acked) >= run.messages else ended
    rate = len(run.acked) / (last - first) if last > first else 0.0
    arrived = run.delivered if run.track_agent else run.acked
    # A message that never arrived counts with the time waited for it (a lower bound).
    lat = [(arrived.get(b, ended) - at) * 1000 for b, at in run.sent.items()]
    lat += [(ended - run.t0_perf) * 1000] * (run.messages - len(run.sent))
    lost = run.messages - min(len(run.acked), len(arrived))
    if os.environ.get("BENCH_DEBUG"):
        print(
            f"sent {len(run.sent)} acked {len(run.acked)} at agent {len(run.delivered)} errors {run.errors}",
            file=sys.stderr,
        )
    return Outcome(rate, _percentile(lat, 0.5), _percentile(lat, 0.99), lost, connected)


async def engine_run(visitors: int, rate: float, seconds: float, progress: Any) -> Outcome:
    """The engine: agent + `visitors` chat visitors on a fresh ``tidings serve``."""
    async with tidings_serve() as server:
        run = Run(visitors, rate, seconds, track_agent=True)
        token = server.lines["demo agent token"]
        hello = '{"type":"hello","session":null,"visitor":{}}'
        return await _drive(
            server.ws_base + "/ws/chat",
            run,
            hello,
            progress,
            agent=partial(_agent, server.ws_base + "/ws/agent", token, run),
        )


async def echo_run(visitors: int, rate: float, seconds: float, progress: Any) -> Outcome:
    """The baseline: the same clients and schedule on a bare trio-websocket echo server."""
    async with server_process(["-c", ECHO_SERVER], ("console",)) as server:
        run = Run(visitors, rate, seconds)
        return await _drive(server.ws_base + "/", run, None, progress)


# -- the scenario --------------------------------------------------------------------------


@scenario("websocket", repeats=3, quick_repeats=1)
def websocket(quick: bool, progress: Progress) -> list[Row]:
    """Web chat visitors → agent on a real server (throughput, latency) vs a bare WS echo."""
    sizes = QUICK if quick else FULL
    raise_fd_limit(max(n for n, _, _ in sizes))
    rows: list[Row] = []
    steps = 2 * len(sizes)
    for i, (n, rate, seconds) in enumerate(sizes):
        label = f"{n:,} visitors @ {rate:,} msg/s"

        def say(what: str, step: int) -> None:
            progress(step / steps, what)

        engine = trio.run(engine_run, n, rate, seconds, lambda s, i=i: say(f"engine: {s}", 2 * i))
        echo = trio.run(echo_run, n, rate, seconds, lambda s, i=i: say(f"echo: {s}", 2 * i + 1))
        tput = f"engine /ws/chat acks, {label}"
        p50 = f"engine visitor→agent p50, {label}"
        p99 = f"engine visitor→agent p99, {label}"
        lost = None
        if engine.lost or echo.lost:
            lost = (
                f"messages not acked/delivered {DRAIN_S:.0f} s after the last send: engine "
                f"{engine.lost:,}, echo {echo.lost:,} of {round(rate * seconds):,} (their "
                "latency counts as the time waited, so p99 is a lower bound)"
            )
        rows += [
            row(tput, engine.rate, "msgs/s", note=lost),
            row(f"trio-websocket echo, {label}", echo.rate, "msgs/s", baseline_of=tput),
            row(p50, engine.p50_ms, "ms", better="lower"),
            row(
                f"echo round trip p50, {label}", echo.p50_ms, "ms", baseline_of=p50, better="lower"
            ),
            row(p99, engine.p99_ms, "ms", better="lower"),
            row(
                f"echo round trip p99, {label}", echo.p99_ms, "ms", baseline_of=p99, better="lower"
            ),
        ]
    progress(1.0, "done")
    return rows


if __name__ == "__main__":  # ad hoc: python -m tidings.bench.websocket VISITORS RATE SECONDS
    n_, r_, s_ = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    raise_fd_limit(n_)
    for fn in (engine_run, echo_run):
        print(
            fn.__name__,
            trio.run(fn, n_, r_, s_, lambda s: print(" ", s, file=sys.stderr)),
            flush=True,
        )
    os._exit(0)
