"""Scenario ``websocket``: web chat visitors on a real ``tidings serve``, against a bare echo.

The engine runs as a real ``tidings serve --port 0 --store memory://`` subprocess (the
in-memory store, so the figure is the transports and the actors, not a disk). One agent
connects to ``/ws/agent`` (with ``tidings.client``) as the demo agent and ``subscribe``s; then
``N`` visitors connect to ``/ws/chat``, say ``hello`` and each send one warm-up message
(which creates their ticket), 64 at a time. Once the agent has seen every warm-up
message, the timed phase sends ``rate × seconds`` messages open-loop at ``rate`` msg/s in
total: message ``k`` is due at ``t0 + k / rate`` and is sent by visitor ``k mod N`` (so a
visitor sends ``rate / N`` msg/s, far below the server's 50 frames/s per connection).
Every visitor reads its own frames in its own task. The visitors run in
``CLIENT_PROCESSES`` worker processes (each with a share of them), the agent in the
scenario's process; they time with ``time.monotonic()``, one clock for every process.
Measured:

- throughput: timed acks received ÷ (last ack − first send),
- visitor-to-agent latency: from just before the visitor sends a message to the agent
  receiving the ``message.created`` event for it (matched by its unique body), p50/p99,
- CPU per timed message, from the start of the timed phase until every ack (and agent
  event) is in: the server's (``utime + stime`` from ``/proc/<pid>/stat``) beside the
  clients' (the workers' and the agent's ``time.process_time()``), so a reader sees
  whether the clients, not the server, took the cores.

Baseline, same run and same workload: a bare trio-websocket echo server in its own
subprocess (it sends every frame back), ``N`` clients in the same worker processes with
the same warm-up and schedule; its throughput is echoes/s and its latency the client's
round trip. The order of engine and echo alternates between repetitions. On a 2-core
machine clients and server share the CPU, which the ratio shares too (but the engine's
run also has the agent's event stream to read: ``message.created``, ``ticket.updated``, …
per message).
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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # the command name (field 2) may hold spaces: count fields after its closing ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
#
# The visitors run in CLIENT_PROCESSES worker processes (`client_process`), each with a
# share of them; the agent (engine runs) runs in the scenario's process. Workers and the scenario speak JSON lines: a worker prints `{"warm":…}` once its
# visitors are connected and warmed up, reads `{"t0":…}` (time.monotonic() of message 0,
# the same clock in every process), sends its share of the schedule, and prints its
# `{"sent":…,"acked":…}` (monotonic times by body) with the CPU it used meanwhile.

CLIENT_PROCESSES = 2


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


class ClientSpec(msgspec.Struct):
    """What one worker process does: visitors `first` … `last - 1` of `visitors`."""

    url: str
    hello: str | None
    first: int
    last: int
    visitors: int
    rate: float
    seconds: float


class Warm(msgspec.Struct):
    """A worker's first line."""

    warm: int
    failed: int


class Go(msgspec.Struct):
    """The scenario's answer: when message 0 is due (time.monotonic())."""

    t0: float


class Report(msgspec.Struct):
    """A worker's last line: monotonic send and ack times by body, error frames by
    code, and its CPU seconds from `Go` to this report."""

    sent: dict[str, float]
    acked: dict[str, float]
    errors: dict[str, int]
    cpu_s: float


def _schedule(visitors: int, rate: float, seconds: float) -> int:
    """How many messages the timed phase sends."""
    return max(1, round(rate * seconds))


@dataclass
class Run:
    """One worker's share of a measurement: the schedule and what it saw."""

    spec: ClientSpec
    messages: int = 0
    t0: float = 0.0  # trio clock time of message 0
    sent: dict[str, float] = field(default_factory=dict)  # body -> monotonic at send
    acked: dict[str, float] = field(default_factory=dict)  # body -> monotonic at ack/echo
    mine: int = 0  # messages this worker sends
    warm_acks: int = 0
    failed: int = 0
    warm_done: trio.Event = field(default_factory=trio.Event)
    go: trio.Event = field(default_factory=trio.Event)
    all_in: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)
    errors: dict[str, int] = field(default_factory=dict)  # error frames by code

    def __post_init__(self) -> None:
        s = self.spec
        self.messages = _schedule(s.visitors, s.rate, s.seconds)
        self.mine = sum(len(range(v, self.messages, s.visitors)) for v in range(s.first, s.last))

    def warmed(self, ok: bool) -> None:
        if ok:
            self.warm_acks += 1
        else:
            self.failed += 1
        if self.warm_acks + self.failed >= self.spec.last - self.spec.first:
            self.warm_done.set()


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
                run.acked[cid] = time.monotonic()
                if len(run.acked) >= run.mine:
                    run.all_in.set()
    except ConnectionClosed:
        pass


async def _visitor(v: int, run: Run, gate: trio.Semaphore) -> None:
    spec = run.spec
    warmed = False
    try:
        async with AsyncExitStack() as stack:
            async with gate:
                ws = await stack.enter_async_context(
                    open_websocket_url(spec.url, connect_timeout=60, disconnect_timeout=5)
                )
                if spec.hello is not None:
                    await ws.send_message(spec.hello)
                    while _parse(await ws.get_message()).type != "ready":
                        pass
                warm = trio.Event()
                nursery = await stack.enter_async_context(trio.open_nursery())
                nursery.start_soon(_visitor_reader, ws, run, warm)
                await ws.send_message(_message(f"w-{v}"))
                await warm.wait()
            warmed = True
            run.warmed(True)
            await run.go.wait()
            for k in range(v, run.messages, spec.visitors):
                await trio.sleep_until(run.t0 + k / spec.rate)
                body = f"m-{k}"
                run.sent[body] = time.monotonic()
                await ws.send_message(_message(body))
            await run.finished.wait()
            nursery.cancel_scope.cancel()
    except Exception:  # refused, reset, timed out: counted (trio.Cancelled is not one)
        if not warmed:
            run.warmed(False)


async def _client_main(spec: ClientSpec) -> None:
    """A worker process: its visitors, driven by the scenario over stdin/stdout."""
    run = Run(spec)
    stdin = _Lines(trio.lowlevel.FdStream(os.dup(0)))
    gate = trio.Semaphore(max(1, CONNECT_AT_ONCE // CLIENT_PROCESSES))  # all workers: ≤ CONNECT_AT_ONCE
    async with trio.open_nursery() as nursery:
        for v in range(spec.first, spec.last):
            nursery.start_soon(_visitor, v, run, gate)
        await run.warm_done.wait()
        print(msgspec.json.encode(Warm(run.warm_acks, run.failed)).decode(), flush=True)
        go = msgspec.json.decode(await stdin.line(), type=Go)
        cpu = time.process_time()
        run.t0 = trio.current_time() + (go.t0 - time.monotonic())
        run.go.set()
        with trio.move_on_at(run.t0 + spec.seconds + DRAIN_S):
            await run.all_in.wait()
        report = Report(run.sent, run.acked, run.errors, time.process_time() - cpu)
        print(msgspec.json.encode(report).decode(), flush=True)
        run.finished.set()


class _Lines:
    """Lines from a trio receive stream."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> bytes:
        """The next line (without its newline); EOFError at the end of the stream."""
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("the stream ended")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


@dataclass
class Agent:
    """The agent's view (engine runs): when each message's `message.created` came."""

    visitors: int
    failed: int = 0
    warm_seen: int = 0
    expected: int = 0  # timed messages
    delivered: dict[str, float] = field(default_factory=dict)  # body -> monotonic
    warm: trio.Event = field(default_factory=trio.Event)
    all_in: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


async def _agent(url: str, token: str, agent: Agent, ready: trio.Event) -> None:
    async with open_agent_client(url, token) as client:
        events = client.subscribe(since=0)  # replays from the start: nothing sent is missed
        ready.set()
        with agent.scope:
            async for event in events:
                message = event.data.get("message") if event.event == "message.created" else None
                if not isinstance(message, dict):
                    continue
                body = message.get("body", "")
                if body.startswith("w-"):
                    agent.warm_seen += 1
                    if agent.warm_seen >= agent.visitors - agent.failed:
                        agent.warm.set()
                elif body.startswith("m-") and body not in agent.delivered:
                    agent.delivered[body] = time.monotonic()
                    if len(agent.delivered) >= agent.expected:
                        agent.all_in.set()


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
    server_cpu_s: float  # from the go signal until every report (and agent event) was in
    clients_cpu_s: float  # the worker processes' and (engine) the agent's, the same span
    messages: int


@asynccontextmanager
async def _worker(spec: ClientSpec) -> Any:
    """A client worker process running `spec`; yields (process, its stdout lines)."""
    argv = [
        sys.executable, "-c", "from tidings.bench.websocket import client_process; client_process()",
        msgspec.json.encode(spec).decode(),
    ]
    proc = await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT)
    )
    try:
        assert proc.stdout is not None
        yield proc, _Lines(proc.stdout)
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def _drive(
    url: str,
    visitors: int,
    rate: float,
    seconds: float,
    hello: str | None,
    server_pid: int,
    progress: Callable[[str], None],
    agent: Agent | None = None,
    start_agent: Callable[[trio.Event], Awaitable[None]] | None = None,
) -> Outcome:
    messages = _schedule(visitors, rate, seconds)
    share = math.ceil(visitors / CLIENT_PROCESSES)
    specs = [
        ClientSpec(url, hello, first, min(first + share, visitors), visitors, rate, seconds)
        for first in range(0, visitors, share)
    ]
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        if start_agent is not None:
            ready = trio.Event()
            nursery.start_soon(start_agent, ready)
            await ready.wait()
        progress(f"connecting {visitors:,} from {len(specs)} processes")
        workers = [await stack.enter_async_context(_worker(s)) for s in specs]
        connected = failed = 0
        with trio.move_on_after(300):
            for _, lines in workers:
                warm = msgspec.json.decode(await lines.line(), type=Warm)
                connected, failed = connected + warm.warm, failed + warm.failed
            if agent is not None:
                agent.failed, agent.expected = failed, messages
                if agent.warm_seen >= visitors - failed:
                    agent.warm.set()
                await agent.warm.wait()
        if connected < visitors:
            raise RuntimeError(f"only {connected:,} of {visitors:,} clients connected and warmed up")
        await trio.sleep(0.5)
        progress(f"{messages:,} messages at {rate:,.0f}/s")
        t0 = time.monotonic() + 0.3
        server_cpu, agent_cpu = cpu_seconds(server_pid), time.process_time()
        for proc, _ in workers:
            assert proc.stdin is not None
            await proc.stdin.send_all(msgspec.json.encode(Go(t0)) + b"\n")
        reports = [msgspec.json.decode(await lines.line(), type=Report) for _, lines in workers]
        if agent is not None:
            with trio.move_on_at(trio.current_time() + max(0.0, t0 + seconds + DRAIN_S - time.monotonic())):
                await agent.all_in.wait()
            agent.scope.cancel()
        ended = time.monotonic()
        server_cpu = cpu_seconds(server_pid) - server_cpu
        clients_cpu = sum(r.cpu_s for r in reports) + (time.process_time() - agent_cpu if agent else 0.0)
        nursery.cancel_scope.cancel()
    sent = {b: t for r in reports for b, t in r.sent.items()}
    acked = {b: t for r in reports for b, t in r.acked.items()}
    first = min(sent.values(), default=0.0)
    # Over the whole wait when acks are missing: otherwise a stall would look fast.
    last = max(acked.values(), default=first) if len(acked) >= messages else ended
    rate_seen = len(acked) / (last - first) if last > first else 0.0
    arrived = agent.delivered if agent is not None else acked
    # A message that never arrived counts with the time waited for it (a lower bound).
    lat = [(arrived.get(b, ended) - at) * 1000 for b, at in sent.items()]
    lat += [(ended - t0) * 1000] * (messages - len(sent))
    lost = messages - min(len(acked), len(arrived))
    if os.environ.get("BENCH_DEBUG"):
        errors: dict[str, int] = {}
        for r in reports:
            for code, n in r.errors.items():
                errors[code] = errors.get(code, 0) + n
        print(f"sent {len(sent)} acked {len(acked)} at agent {len(arrived)} errors {errors}", file=sys.stderr)
    return Outcome(
        rate_seen, _percentile(lat, 0.5), _percentile(lat, 0.99), lost, connected,
        server_cpu, clients_cpu, messages,
    )


async def engine_run(visitors: int, rate: float, seconds: float, progress: Any) -> Outcome:
    """The engine: agent + `visitors` chat visitors on a fresh ``tidings serve``."""
    async with tidings_serve() as server:
        token = server.lines["demo agent token"]
        agent = Agent(visitors)
        hello = '{"type":"hello","session":null,"visitor":{}}'
        return await _drive(
            server.ws_base + "/ws/chat",
            visitors,
            rate,
            seconds,
            hello,
            server.process.pid,
            progress,
            agent=agent,
            start_agent=partial(_agent, server.ws_base + "/ws/agent", token, agent),
        )


async def echo_run(visitors: int, rate: float, seconds: float, progress: Any) -> Outcome:
    """The baseline: the same clients and schedule on a bare trio-websocket echo server."""
    async with server_process(["-c", ECHO_SERVER], ("console",)) as server:
        return await _drive(
            server.ws_base + "/", visitors, rate, seconds, None, server.process.pid, progress
        )


# -- the scenario --------------------------------------------------------------------------


def _cpu_share(o: Outcome, cpu_s: float) -> float:
    """CPU seconds per message, in µs."""
    return cpu_s / o.messages * 1e6


def _lower_pair(name: str, value: float, base: str, base_value: float, unit: str) -> list[Row]:
    """An engine row where lower is better, and its echo baseline `base`."""
    return [
        row(name, value, unit, better="lower"),
        row(base, base_value, unit, baseline_of=name, better="lower"),
    ]


def say_step(progress: Progress, name: str, fraction: float, what: str) -> None:
    """Report `what` of the `name` run, which starts at `fraction` of the repetition."""
    progress(fraction, f"{name}: {what}")


@scenario("websocket", repeats=3, quick_repeats=1)
def websocket(quick: bool, progress: Progress) -> list[Row]:
    """Web chat visitors → agent on a real server (throughput, latency, CPU) vs a bare WS echo."""
    sizes = QUICK if quick else FULL
    raise_fd_limit(max(n for n, _, _ in sizes))
    rows: list[Row] = []
    steps = 2 * len(sizes)
    for i, (n, rate, seconds) in enumerate(sizes):
        label = f"{n:,} visitors @ {rate:,} msg/s"
        # The order turns with the repetition, so neither server always runs first.
        order = [("engine", engine_run), ("echo", echo_run)]
        got: dict[str, Outcome] = {}
        for j, (name, fn) in enumerate(order[:: -1 if progress.repetition % 2 else 1]):
            step = partial(say_step, progress, name, (2 * i + j) / steps)
            got[name] = trio.run(fn, n, rate, seconds, step)
        engine, echo = got["engine"], got["echo"]
        tput = f"engine /ws/chat acks, {label}"
        p50 = f"engine visitor→agent p50, {label}"
        p99 = f"engine visitor→agent p99, {label}"
        cpu = f"engine server CPU per message, {label}"
        clients = f"engine clients' CPU per message ({CLIENT_PROCESSES} processes + agent), {label}"
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
            *_lower_pair(p50, engine.p50_ms, f"echo round trip p50, {label}", echo.p50_ms, "ms"),
            *_lower_pair(p99, engine.p99_ms, f"echo round trip p99, {label}", echo.p99_ms, "ms"),
            *_lower_pair(
                cpu,
                _cpu_share(engine, engine.server_cpu_s),
                f"echo server CPU per message, {label}",
                _cpu_share(echo, echo.server_cpu_s),
                "µs",
            ),
            *_lower_pair(
                clients,
                _cpu_share(engine, engine.clients_cpu_s),
                f"echo clients' CPU per message ({CLIENT_PROCESSES} processes), {label}",
                _cpu_share(echo, echo.clients_cpu_s),
                "µs",
            ),
        ]
    progress(1.0, "done")
    return rows



def client_process() -> None:
    """The entry point of a client worker process (see `_drive`): its `ClientSpec` is the
    JSON in ``sys.argv[1]``."""
    trio.run(_client_main, msgspec.json.decode(sys.argv[1], type=ClientSpec))
