"""Scenario ``webhook``: signed inbound SMS on a real ``tidings serve``, against a bare route.

Three servers per repetition, one after the other, each a real subprocess on this
machine and each driven by the same load generator with the same requests:

1. **bare route** (the baseline): a Starlette app with one POST route that reads the raw
   body and answers the same empty TwiML, under hypercorn's trio worker with the very
   hypercorn configuration ``tidings serve`` uses (``transports.server._hypercorn_config``);
2. **engine, autoresponder off**: ``tidings serve --store sqlite:///<tmp>/bench.db`` with
   ``sms.auth_token`` set (every ``X-Twilio-Signature`` is checked) and
   ``settings.sms.autoresponder.mode = "off"``: each request is parse, verify, store the
   message, update its profile and ticket, publish the agent events, answer;
3. **engine, autoresponder on** (mode ``everyone``): the same, and each inbound SMS also
   queues an outbound autoreply that the courier posts to a Twilio stand-in (the bare
   server's ``Messages.json`` route, in its own subprocess) while the load goes on.

Every request is a Twilio-style form (``MessageSid`` unique per request), signed for the
server's URL before the run. Two paths are measured on each engine server:

- **steady state** (the main rows): ``From`` is one of ``PHONES`` numbers, and every one of
  them has sent one SMS before the clock starts (the phones' warm-up, one request per
  phone, from the Python client), so each timed request is a known phone writing to its
  open SMS ticket;
- **first message** (rows labelled so): every request comes from a phone never seen
  before, so each one makes a profile, its directory entry and a ticket. The load generator is ``wrk`` (C, epoll; a Lua script
plays the pre-signed requests, a distinct slice per wrk thread) when it is on the PATH,
else this package's Python client (httpx, one ``AsyncClient`` per 8 connections), which
eats a good part of the cores the server needs; each throughput row's note names the one
used. Every answer must be ``200``.

Measured per server and path: requests/s over the timed window (after a warm-up with other
``MessageSid``s), latency p50/p99 as the load generator saw it, and the server's CPU per
request (``utime + stime`` from ``/proc/<pid>/stat`` over the window ÷ requests), which a
loaded machine disturbs less than throughput. Ratios: engine ÷ bare route.
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import msgspec
import trio

from tidings.bench.harness import Progress, Row, row, scenario
from tidings.bench.websocket import _percentile, cpu_seconds, server_process, tidings_serve
from tidings.transports.twilio_signature import compute_signature

AUTH_TOKEN = "bench-twilio-auth-token"
PHONES = 3_000  # distinct senders of the steady state
QUICK_PHONES = 50
FULL = (64, 3.0)  # (connections, seconds)
QUICK = (8, 1.0)
PER_CLIENT = 8  # connections (and worker tasks) per httpx.AsyncClient of the Python client
WARMUP_S = 1.0  # load before the clock starts (connections opened, code paths warm)
MAX_RATE = 10_000  # requests/s the pre-signed requests are sized for (reused beyond, noted)
WRK_THREADS = 2

LOADGENS = ("wrk", "python")

CONFIG = """
[sms]
sender = "+15550001111"
auth_token = "{token}"
{provider}
[settings.sms.autoresponder]
mode = "{mode}"
"""

TWILIO_STAND_IN = """provider = "twilio"
account_sid = "ACbench"
base_url = "{base}"
"""

BARE_SERVER = """
import itertools, trio
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.transports.config import load_config
from tidings.transports.server import _hypercorn_config

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
created = itertools.count(1)
posts = [0]

async def inbound(request: Request) -> Response:
    await request.body()
    return Response(TWIML, media_type="text/xml")

async def messages(request: Request) -> Response:  # a Twilio stand-in: takes every SMS
    await request.body()
    posts[0] += 1
    body = '{"sid":"SM%032d","status":"queued"}' % next(created)
    return Response(body, status_code=201, media_type="application/json")

async def sent(request: Request) -> Response:
    return Response(str(posts[0]))

app = Starlette(routes=[
    Route("/sms/inbound", inbound, methods=["POST"]),
    Route("/2010-04-01/Accounts/{sid}/Messages.json", messages, methods=["POST"]),
    Route("/sent", sent),
])

async def main():
    hc = _hypercorn_config(load_config(None, {"server.port": 0}))
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, hc)
        print(f"console: http://127.0.0.1:{binds[0].rsplit(':', 1)[1]}/", flush=True)

trio.run(main)
"""

# wrk's Lua side: each thread plays its slice (every THREADS-th line, from its index) of
# the file of pre-signed requests, `signature<TAB>form body` a line; `done` prints one
# JSON line for `_wrk_result`.
WRK_SCRIPT = """
local threads, counter = {}, 0
function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local path, stride = args[1], tonumber(args[2])
  lines, n, reused = {}, 0, 0
  local i = 0
  for line in io.lines(path) do
    if i % stride == index then
      local tab = line:find("\\t", 1, true)
      n = n + 1
      lines[n] = {line:sub(1, tab - 1), line:sub(tab + 1)}
    end
    i = i + 1
  end
  at = 0
  headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
end
function request()
  at = at + 1
  if at > n then at, reused = 1, reused + 1 end
  local item = lines[at]
  headers["X-Twilio-Signature"] = item[1]
  return wrk.format("POST", nil, headers, item[2])
end
function done(summary, latency, requests)
  local reused_all = 0
  for _, t in ipairs(threads) do reused_all = reused_all + t:get("reused") end
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests":%d,"duration_us":%d,"bad_status":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p99_us":%d,"reused":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), reused_all))
end
"""


@dataclass
class Load:
    """What one load generator run saw."""

    rate: float  # requests/s
    p50_ms: float
    p99_ms: float
    requests: int
    reused: int = 0  # passes over the pre-signed requests beyond the first (wrk)


@dataclass
class Measured:
    """One server under load: the load generator's view and the server's CPU."""

    load: Load
    cpu_us_per_request: float
    outbound: int = 0  # SMS the Twilio stand-in took during the run


@dataclass
class Paths:
    """One engine server: the steady state, and first messages from new phones."""

    steady: Measured
    first: Measured


def loadgen_default() -> str:
    """``wrk`` when it is installed, else the Python client."""
    return "wrk" if shutil.which("wrk") else "python"


def known_phones(count: int) -> list[str]:
    """The `count` senders of the steady state (``+1555…``)."""
    rng = random.Random(5)
    return [f"+1555{rng.randrange(10**7):07d}" for _ in range(count)]


def signed_requests(
    url: str, first: int, count: int, phones: list[str] | None = None
) -> list[tuple[str, bytes]]:
    """`count` (signature, form body) pairs for `url`, `MessageSid`s from `first` on, in
    turn from each of `phones`; without `phones`, each from a phone of its own (``+1556…``,
    never one of `known_phones`)."""
    out = []
    for i in range(first, first + count):
        params = [
            ("MessageSid", f"SMbench{i:026d}"),
            ("AccountSid", "ACbench"),
            ("From", phones[i % len(phones)] if phones else f"+1556{i % 10**10:010d}"),
            ("To", "+15550001111"),
            ("Body", f"hello {i}"),
            ("NumMedia", "0"),
        ]
        out.append((compute_signature(AUTH_TOKEN, url, params), urlencode(params).encode()))
    return out


# -- the Python client ----------------------------------------------------------------------


async def hammer(
    url: str, requests: list[tuple[str, bytes]], connections: int, seconds: float
) -> Load:
    """POST `requests` (in turn, reusing them if they run out) to `url` from `connections`
    concurrent httpx workers for `seconds`."""
    latencies: list[float] = []
    bad: list[str] = []
    counter = iter(range(10**9))

    async def worker(client: httpx.AsyncClient, stop_at: float) -> None:
        while trio.current_time() < stop_at:
            signature, body = requests[next(counter) % len(requests)]
            headers = {
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            }
            started = time.perf_counter()
            answer = await client.post(url, content=body, headers=headers)
            if answer.status_code != 200:
                bad.append(f"{answer.status_code} {answer.text[:100]}")
                return
            latencies.append(time.perf_counter() - started)

    # One AsyncClient per PER_CLIENT workers: httpcore's pool scans every connection for
    # every request (O(connections) each), which at 64 connections in one pool made the
    # client, not the servers, the bottleneck.
    limits = httpx.Limits(max_connections=PER_CLIENT, max_keepalive_connections=PER_CLIENT)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=30))
            for _ in range(math.ceil(connections / PER_CLIENT))
        ]
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(connections):
                nursery.start_soon(worker, clients[i // PER_CLIENT], trio.current_time() + seconds)
        elapsed = time.perf_counter() - started
    if bad:
        raise RuntimeError(f"{url}: {len(bad)} requests refused, e.g. {bad[0]}")
    ms = [x * 1000 for x in latencies]
    reused = max(0, len(ms) - len(requests))
    return Load(len(ms) / elapsed, _percentile(ms, 0.5), _percentile(ms, 0.99), len(ms), reused)


async def send_each(url: str, requests: list[tuple[str, bytes]], connections: int) -> None:
    """POST each of `requests` once to `url` from `connections` concurrent httpx workers
    (the phones' warm-up: a count, not a duration, which wrk cannot do)."""
    pending = iter(requests)
    limits = httpx.Limits(max_connections=PER_CLIENT, max_keepalive_connections=PER_CLIENT)

    async def worker(client: httpx.AsyncClient) -> None:
        for signature, body in pending:
            headers = {
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            }
            answer = await client.post(url, content=body, headers=headers)
            if answer.status_code != 200:
                raise RuntimeError(f"{url}: warm-up refused: {answer.status_code} {answer.text[:100]}")

    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=30))
            for _ in range(math.ceil(connections / PER_CLIENT))
        ]
        async with trio.open_nursery() as nursery:
            for i in range(connections):
                nursery.start_soon(worker, clients[i // PER_CLIENT])


# -- wrk ---------------------------------------------------------------------------------------


class _WrkSummary(msgspec.Struct):
    requests: int
    duration_us: int
    bad_status: int
    socket_errors: int
    p50_us: int
    p99_us: int
    reused: int


async def wrk(url: str, requests: list[tuple[str, bytes]], connections: int, seconds: float) -> Load:
    """Run ``wrk`` against `url` for `seconds` (whole seconds: all wrk takes) with
    `connections` connections, playing `requests`."""
    with tempfile.TemporaryDirectory(prefix="tidings-wrk-") as tmp:
        script, lines = Path(tmp) / "signed.lua", Path(tmp) / "requests.txt"
        script.write_text(WRK_SCRIPT, encoding="utf-8")
        with lines.open("wb") as f:
            for signature, body in requests:
                f.write(signature.encode() + b"\t" + body + b"\n")
        threads = min(WRK_THREADS, connections)
        argv = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
            "-s", str(script), url, "--", str(lines), str(threads),
        ]
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    out = done.stdout.decode(errors="replace")
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if done.returncode != 0 or not last.startswith("{"):
        raise RuntimeError(f"wrk failed ({done.returncode}): {out[-1000:]} {done.stderr[-500:]!r}")
    s = msgspec.json.decode(last, type=_WrkSummary)
    if s.bad_status or s.socket_errors:
        raise RuntimeError(f"{url}: wrk saw {s.bad_status} non-2xx answers, {s.socket_errors} socket errors")
    return Load(s.requests / (s.duration_us / 1e6), s.p50_us / 1e3, s.p99_us / 1e3, s.requests, s.reused)


# -- one server under load ----------------------------------------------------------------------


Drive = Callable[[str, list[tuple[str, bytes]], int, float], Awaitable[Load]]


def _driver(loadgen: str) -> Drive:
    """The load generator named `loadgen`: ``wrk``, else the Python client."""
    return wrk if loadgen == "wrk" else hammer


# MessageSids by use, so that no two phases share one: the timed steady state from 0, its
# warm-up, the phones' warm-up, the first messages.
_WARM_SIDS, _PHONE_SIDS, _FIRST_SIDS = 10**9, 2 * 10**9, 3 * 10**9


async def measure(
    url: str, pid: int, loadgen: str, connections: int, seconds: float, phones: list[str]
) -> Measured:
    """Warm `url` up, then load it for `seconds` with SMS from `phones`; the server process
    is `pid`."""
    drive = _driver(loadgen)
    warm_n = max(200, int(MAX_RATE * WARMUP_S))
    timed_n = int(MAX_RATE * seconds)
    warm = signed_requests(url, _WARM_SIDS, warm_n, phones)
    timed = signed_requests(url, 0, timed_n, phones)
    await drive(url, warm, connections, WARMUP_S)
    return await _timed(drive, url, pid, timed, connections, seconds)


async def measure_first(url: str, pid: int, loadgen: str, connections: int, seconds: float) -> Measured:
    """Load `url` for `seconds` with SMS each from a new phone (no warm-up of its own: it
    follows the steady state on the same server)."""
    drive = _driver(loadgen)
    timed = signed_requests(url, _FIRST_SIDS, int(MAX_RATE * seconds))
    return await _timed(drive, url, pid, timed, connections, seconds)


async def _timed(
    drive: Drive, url: str, pid: int, requests: list[tuple[str, bytes]], connections: int, seconds: float
) -> Measured:
    """`drive` `requests` at `url` for `seconds`, with the server's (`pid`) CPU per request."""
    cpu = cpu_seconds(pid)
    load = await drive(url, requests, connections, seconds)
    cpu = cpu_seconds(pid) - cpu
    return Measured(load, cpu / max(load.requests, 1) * 1e6)


def _config(tmp: str, mode: str, provider_base: str | None) -> str:
    provider = TWILIO_STAND_IN.format(base=provider_base) if provider_base else ""
    path = Path(tmp) / "tidings.toml"
    path.write_text(CONFIG.format(token=AUTH_TOKEN, provider=provider, mode=mode), encoding="utf-8")
    return str(path)


async def engine_run(
    loadgen: str, connections: int, seconds: float, autoresponder: bool, phones: list[str]
) -> Paths:
    """Signed webhooks on ``tidings serve`` over SQLite: one SMS from each of `phones`, then
    the steady state from them, then first messages from new phones; with `autoresponder`,
    each makes an outbound SMS that the courier posts to a Twilio stand-in."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        store = f"sqlite:///{tmp}/bench.db"
        async with AsyncExitStack() as stack:
            stand_in = None
            if autoresponder:
                stand_in = await stack.enter_async_context(server_process(["-c", BARE_SERVER], ("console",)))
            config = _config(tmp, "everyone" if autoresponder else "off", stand_in and stand_in.base)
            server = await stack.enter_async_context(tidings_serve("--config", config, store=store))
            url, pid = server.base + "/sms/inbound", server.process.pid
            await send_each(url, signed_requests(url, _PHONE_SIDS, len(phones), phones), connections)
            got = Paths(
                await measure(url, pid, loadgen, connections, seconds, phones),
                await measure_first(url, pid, loadgen, connections, seconds),
            )
            if stand_in is not None:
                async with httpx.AsyncClient() as client:
                    got.steady.outbound = int((await client.get(stand_in.base + "/sent")).text)
                if got.steady.outbound == 0:
                    raise RuntimeError("autoresponder on, yet the Twilio stand-in took no SMS")
            return got


async def bare_run(loadgen: str, connections: int, seconds: float, phones: list[str]) -> Measured:
    """The same requests on the bare Starlette POST route under the same hypercorn config."""
    async with server_process(["-c", BARE_SERVER], ("console",)) as server:
        url, pid = server.base + "/sms/inbound", server.process.pid
        return await measure(url, pid, loadgen, connections, seconds, phones)


def _note(loadgen: str, got: Measured) -> str:
    if loadgen == "wrk":
        said = "load generator: wrk"
    elif shutil.which("wrk"):
        said = "load generator: the Python client (httpx; asked for)"
    else:
        said = "load generator: the Python client (httpx; wrk is not installed), which shares the cores with the server"
    if got.load.reused:
        said += f"; pre-signed requests ran out and were replayed {got.load.reused} time(s)"
    if got.outbound:
        said += f"; the Twilio stand-in took {got.outbound:,} autoreplies in all (warm-ups + both paths)"
    return said


@scenario("webhook", repeats=5, quick_repeats=1, options=("loadgen",))
def webhook(quick: bool, progress: Progress, loadgen: str | None = None) -> list[Row]:
    """Signed inbound SMS webhooks on a real server (SQLite) vs a bare hypercorn+Starlette route."""
    connections, seconds = QUICK if quick else FULL
    phones = known_phones(QUICK_PHONES if quick else PHONES)
    gen = loadgen or loadgen_default()
    if gen == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--loadgen wrk: wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    label = f"{connections} connections"
    # The order turns with the repetition, so no server always runs first (or last).
    runs: dict[str, Callable[[], Measured | Paths]] = {
        "bare": lambda: trio.run(bare_run, gen, connections, seconds, phones),
        "off": lambda: trio.run(engine_run, gen, connections, seconds, False, phones),
        "on": lambda: trio.run(engine_run, gen, connections, seconds, True, phones),
    }
    order = list(runs)
    shift = progress.repetition % len(order)
    got: dict[str, Measured | Paths] = {}
    for step, name in enumerate(order[shift:] + order[:shift]):
        progress(step / len(order), name)
        got[name] = runs[name]()
    progress(1.0, "done")
    bare = got["bare"]
    assert isinstance(bare, Measured)
    rows: list[Row] = []
    for name, what in (("off", "autoresponder off"), ("on", "autoresponder on")):
        paths = got[name]
        assert isinstance(paths, Paths)
        for m, path in ((paths.steady, ""), (paths.first, "first message from a new phone, ")):
            tput = f"engine POST /sms/inbound ({path}signed, SQLite, {what}), {label}"
            cpu = f"engine server CPU per request ({path}{what})"
            rows += [
                row(tput, m.load.rate, "req/s", note=_note(gen, m)),
                row(
                    f"bare Starlette POST route, same hypercorn (vs {path}{what}), {label}",
                    bare.load.rate,
                    "req/s",
                    baseline_of=tput,
                    note=_note(gen, bare) if name == "off" and not path else None,
                ),
                row(f"engine webhook p50 ({path}{what}), {label}", m.load.p50_ms, "ms", better="lower"),
                row(f"engine webhook p99 ({path}{what}), {label}", m.load.p99_ms, "ms", better="lower"),
                row(cpu, m.cpu_us_per_request, "µs", better="lower"),
                row(
                    f"bare route server CPU per request (vs {path}{what})",
                    bare.cpu_us_per_request,
                    "µs",
                    baseline_of=cpu,
                    better="lower",
                ),
            ]
    rows += [
        row(f"bare route p50, {label}", bare.load.p50_ms, "ms", better="lower"),
        row(f"bare route p99, {label}", bare.load.p99_ms, "ms", better="lower"),
    ]
    return rows
