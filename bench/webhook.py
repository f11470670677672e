"""Scenario ``webhook``: signed inbound SMS on a real ``tidings serve``, against a bare route.

The engine runs as a real ``tidings serve --port 0 --store memory://`` subprocess with a
TOML config (in a temporary directory) that sets ``sms.sender`` and ``sms.auth_token``, so
every webhook's ``X-Twilio-Signature`` is checked. ``CONCURRENCY`` client tasks share one
``httpx.AsyncClient`` per 8 of them (8 pooled connections each) and POST Twilio-style form bodies to
``/sms/inbound`` for ``seconds``: each with a distinct ``MessageSid``, ``From`` one of
``PHONES`` numbers (so profiles and tickets are created at first and then reused), signed
with ``twilio.request_validator.RequestValidator``. Every answer must be ``200``. Measured:
requests/s over the window and the p50/p99 of request latency. The engine's answer
comes after the message is stored, its profile and ticket updated, the agent events
published and (default settings) the autoresponder queued.

Baseline, same run, same client and requests: a minimal Starlette app with one POST
route that reads the form body and answers the same empty TwiML, under hypercorn's trio
worker with the very hypercorn configuration ``tidings serve`` uses
(``transports.server._hypercorn_config``), in its own subprocess. Client and servers share
the machine's cores (httpx is not free: at these rates the client is a good part of the
CPU), so the ratio understates how much slower the engine's handler is than the bare one.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import trio

from tidings.bench.harness import Progress, Row, row, scenario
from tidings.bench.websocket import _percentile, server_process, tidings_serve

AUTH_TOKEN = "bench-twilio-auth-token"
PHONES = 3_000  # distinct senders
FULL = (64, 3.0)  # (concurrency, seconds)
QUICK = (8, 1.0)
PER_CLIENT = 8  # connections (and worker tasks) per httpx.AsyncClient
WARMUP_S = 0.3  # requests before the clock starts (connections opened, code paths warm)

CONFIG = f"""
[sms]
sender = "+15550001111"
auth_token = "{AUTH_TOKEN}"
"""

BARE_SERVER = """
import trio
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.transports.config import load_config
from tidings.transports.server import _hypercorn_config

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

async def inbound(request: Request) -> Response:
    await request.body()
    return Response(TWIML, media_type="text/xml")

app = Starlette(routes=[Route("/sms/inbound", inbound, methods=["POST"])])

async def main():
    hc = _hypercorn_config(load_config(None, {"server.port": 0}))
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, hc)
        print(f"console: http://127.0.0.1:{binds[0].rsplit(':', 1)[1]}/", flush=True)

trio.run(main)
"""


def _validator() -> Any:
    try:
        from twilio.request_validator import RequestValidator
    except ImportError as exc:  # pragma: no cover - twilio is in the [test] extra
        raise SystemExit(
            "the webhook benchmark signs with twilio's RequestValidator: "
            "pip install 'tidings[test]'"
        ) from exc
    return RequestValidator(AUTH_TOKEN)


async def hammer(
    urls: list[str], concurrency: int, seconds: float
) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, requests) of signed webhooks POSTed round-robin to
    `urls` (the same webhook on several nodes)."""
    validator = _validator()
    rng = random.Random(5)
    phones = [f"+1555{rng.randrange(10**7):07d}" for _ in range(PHONES)]
    counter = iter(range(10**9))
    latencies: list[float] = []
    timing = [False]
    bad: list[str] = []

    async def worker(client: httpx.AsyncClient, stop_at: float) -> None:
        while trio.current_time() < stop_at:
            i = next(counter)
            url = urls[i % len(urls)]
            params = {
                "MessageSid": f"SMbench{i:026d}",
                "AccountSid": "ACbench",
                "From": phones[i % PHONES],
                "To": "+15550001111",
                "Body": f"hello {i}",
                "NumMedia": "0",
            }
            signature = validator.compute_signature(url, params)
            started = time.perf_counter()
            answer = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
            if answer.status_code != 200:
                bad.append(f"{url}: {answer.status_code} {answer.text[:100]}")
                return
            if timing[0]:
                latencies.append(time.perf_counter() - started)

    # One AsyncClient per PER_CLIENT workers: httpcore's pool scans every connection for
    # every request (O(connections) each), which at 64 connections in one pool made the
    # client, not the servers, the bottleneck.
    limits = httpx.Limits(max_connections=PER_CLIENT, max_keepalive_connections=PER_CLIENT)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=30))
            for _ in range(math.ceil(concurrency / PER_CLIENT))
        ]
        async with trio.open_nursery() as nursery:
            for i in range(concurrency):
                nursery.start_soon(worker, clients[i // PER_CLIENT], trio.current_time() + WARMUP_S)
        if bad:
            raise RuntimeError(f"{len(bad)} requests refused, e.g. {bad[0]}")
        timing[0] = True
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(concurrency):
                nursery.start_soon(worker, clients[i // PER_CLIENT], trio.current_time() + seconds)
        elapsed = time.perf_counter() - started
    if bad:
        raise RuntimeError(f"{len(bad)} requests refused, e.g. {bad[0]}")
    ms = [x * 1000 for x in latencies]
    return len(ms) / elapsed, _percentile(ms, 0.5), _percentile(ms, 0.99), len(ms)


async def engine_run(concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    """Signed webhooks on ``tidings serve`` with ``sms.auth_token`` set."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        config = Path(tmp) / "tidings.toml"
        config.write_text(CONFIG, encoding="utf-8")
        async with tidings_serve("--config", str(config)) as server:
            return await hammer([server.base + "/sms/inbound"], concurrency, seconds)


async def bare_run(concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    """The same requests on a bare Starlette POST route under the same hypercorn config."""
    async with server_process(["-c", BARE_SERVER], ("console",)) as server:
        return await hammer([server.base + "/sms/inbound"], concurrency, seconds)


@scenario("webhook", repeats=5, quick_repeats=1)
def webhook(quick: bool, progress: Progress) -> list[Row]:
    """Signed inbound SMS webhooks on a real server vs a bare hypercorn+Starlette route."""
    concurrency, seconds = QUICK if quick else FULL
    label = f"{concurrency} concurrent"
    progress(0.0, "engine")
    rate, p50, p99, n = trio.run(engine_run, concurrency, seconds)
    progress(0.5, "bare route")
    bare_rate, bare_p50, bare_p99, bare_n = trio.run(bare_run, concurrency, seconds)
    progress(1.0, "done")
    tput = f"engine POST /sms/inbound (signed), {label}"
    return [
        row(tput, rate, "req/s"),
        row(
            f"bare Starlette POST route, same hypercorn, {label}",
            bare_rate,
            "req/s",
            baseline_of=tput,
        ),
        row(f"engine webhook p50, {label}", p50, "ms", better="lower"),
        row(
            f"bare route p50, {label}",
            bare_p50,
            "ms",
            baseline_of=f"engine webhook p50, {label}",
            better="lower",
        ),
        row(f"engine webhook p99, {label}", p99, "ms", better="lower"),
        row(
            f"bare route p99, {label}",
            bare_p99,
            "ms",
            baseline_of=f"engine webhook p99, {label}",
            better="lower",
        ),
    ]
