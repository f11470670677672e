"""Scenario ``chaos``: ``tidings serve`` killed with SIGKILL under load, restarted, checked.

``tidings bench chaos [--trials N] [--store sqlite|redis]``. Each trial:

1. starts a stand-in of Twilio's Messages REST API (a local HTTP server that records every
   POST, answering after a random few milliseconds so a kill can land while its answer
   is on the way), the brand's platform taking the engine's ``[[webhooks]]`` (the same
   kind of server), an SMTP recorder (aiosmtpd, when installed) and, for ``redis``, its
   own ``redis-server`` (AOF, ``appendfsync always``) on a free port;
2. runs ``tidings serve`` (``sms.provider = "twilio"`` at the stand-in, short ``[timing]``)
   on a fresh store in a temporary directory and creates `PROFILES` consenting profiles;
3. drives a mixed load: signed inbound SMS (a third sent twice with the same
   ``MessageSid``, as the provider retries; a fifth of the time a burst of 3 to 8 from
   one phone at once, which the ticket stores in one commit), web chat visitors coming and going over
   ``/ws/chat``, an agent replying, snoozing (for a second or two), marking, blocking
   and unblocking over ``/ws/agent``, campaign SMS via ``/api/messages`` and signed
   status callbacks for what the stand-in took;
4. sends SIGKILL at a random moment of the load, restarts the server on the same store,
   re-delivers every inbound SMS whose webhook was not acknowledged (the provider's
   retry) and some that were, drives the load a little longer, and lets it settle;
5. checks, and counts by kind:

   - ``inbound_lost`` / ``inbound_twice``: an acknowledged inbound SMS stored not exactly once,
   - ``sms_sent_twice``: a message id the stand-in got more than one POST for,
   - ``sms_unidentified``: POSTs without the engine's message id (``Idempotency-Key``),
     which would hide a second send,
   - ``sms_lost``: a stored outbound SMS the stand-in never got, neither ``failed`` nor
     held by a ``send:`` timer,
   - ``snooze_missed``: a ticket still snoozed a second after it was due,
     ``snooze_woke_twice``: more wake-ups than snoozes in the event log,
   - ``followup_missed``: a follow-up still scheduled a second after it was due;
     ``followup_mail_mismatch``: e-mails a visitor got ≠ follow-ups sent to it,
   - ``webhook_lost``: an event (up to the last one when the load settled) that the host
     platform's webhook endpoint never answered 200; ``webhook_ids_differ``: an event
     that came under two delivery ids (a duplicate the receiver could not drop);
     ``webhook_bad_signature``: a POST whose signature did not verify (the endpoint
     answers one POST in ten with 500, so retries happen, across the kill too),
   - ``check:<kind>``: what ``tidings check`` reports on the store (``actors/invariants.py``).

Nothing is weakened for the engine's sake: a violation is counted as seen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h11
import httpx
import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    open_websocket_url,
)

from tidings.actors.invariants import members
from tidings.actors.model import Message, StoredMessage
from tidings.actors.ticket import TICKETS, TicketRecord
from tidings.bench.harness import Progress, Row, row, scenario
from tidings.bench.websocket import Server, server_process
from tidings.client import AgentError, Disconnected, ReplyTimeout, open_agent_client
from tidings.engine import Store
from tidings.engine.store import open_store
from tidings.transports.check import check_store
from tidings.transports.twilio_signature import compute_signature
from tidings.transports.webhooks import PENDING

AUTH_TOKEN = "chaos-auth-token"
WEBHOOK_SECRET = "chaos-webhook-secret"
ACCOUNT_SID = "ACchaos"
SENDER = "+15550001111"
PROFILES = 6
VISITORS = 3
KILL_WINDOW = (0.3, 2.5)
SNOOZE_S = (0.8, 2.0)  # snoozes end this many seconds on  # seconds of load before the SIGKILL
AFTER_RESTART_S = 1.5
SETTLE_MAX_S = 12.0
TIMING = {"followup_delay_s": 1.0, "offline_grace_s": 0.5, "idle_timeout_s": 3.0}
DROPPED = (  # what a client sees when the server dies under it
    OSError,
    httpx.HTTPError,
    trio.BrokenResourceError,
    ConnectionClosed,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    Disconnected,
    ReplyTimeout,
)
KINDS = (
    "inbound_lost",
    "inbound_twice",
    "sms_sent_twice",
    "sms_lost",
    "sms_unidentified",
    "snooze_missed",
    "snooze_woke_twice",
    "followup_missed",
    "followup_mail_mismatch",
    "webhook_lost",
    "webhook_ids_differ",
    "webhook_bad_signature",
)


# -- the provider stand-in -------------------------------------------------------------------


Answer = Callable[[h11.Request, bytes], tuple[int, bytes]]


async def serve_http(answer: Answer, rng: random.Random, task_status: trio.TaskStatus[int]) -> None:
    """Serve HTTP/1.1 on a free port of 127.0.0.1 until cancelled, answering each request
    with `answer(request, body)` after a random 0-30 ms; `task_status` gets the port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def connection(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await _read_request(conn, stream)
                if request is None:
                    return
                status, answered = answer(request, body)
                await trio.sleep(rng.uniform(0.0, 0.03))  # the answer is on its way
                headers = [
                    ("content-type", "application/json"),
                    ("content-length", str(len(answered))),
                ]
                await stream.send_all(
                    conn.send(h11.Response(status_code=status, headers=headers)) or b""
                )
                await stream.send_all(conn.send(h11.Data(data=answered)) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return

    await trio.serve_listeners(connection, listeners)


@dataclass
class Provider:
    """Twilio's Messages API, as far as the engine uses it: every POST is recorded with
    its `Idempotency-Key` (the engine's message id), GETs list what was taken."""

    posts: Counter[str] = field(default_factory=Counter)
    messages: list[dict[str, Any]] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    async def run(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status` gets the port."""
        await serve_http(self._answer, self.rng, task_status)

    def _answer(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        target = request.target.decode()
        path, _, query = target.partition("?")
        if request.method == b"POST":
            form = dict(urllib.parse.parse_qsl(body.decode()))
            key = dict((k.lower(), v) for k, v in request.headers).get(b"idempotency-key", b"")
            sid = f"SM{len(self.messages):08d}{self.rng.getrandbits(64):016x}"
            created = {
                "sid": sid, "status": "queued", "to": form.get("To", ""), "from": form.get("From", ""),
                "body": form.get("Body", ""), "date_created": datetime.now(UTC).isoformat(),
                "idempotency_key": key.decode(),
            }  # fmt: skip
            self.posts[key.decode()] += 1
            self.messages.append(created)
            return 201, json.dumps(created).encode()
        to = dict(urllib.parse.parse_qsl(query)).get("To")
        found = [m for m in self.messages if to is None or m["to"] == to]
        if path.endswith(".json") and "/Messages/" in path:
            sid = path.rsplit("/", 1)[1].removesuffix(".json")
            one = [m for m in self.messages if m["sid"] == sid]
            return (200, json.dumps(one[0]).encode()) if one else (404, b'{"code":20404}')
        return 200, json.dumps({"messages": found, "next_page_uri": None}).encode()


@dataclass
class HostPlatform:
    """The brand's platform taking the engine's webhooks: it checks each signature,
    answers one POST in ten with 500 (so retries happen), and records by event `seq` the
    delivery ids it saw and those it answered 200."""

    attempts: dict[int, set[str]] = field(default_factory=dict)
    delivered: dict[int, set[str]] = field(default_factory=dict)
    bad_signatures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    async def run(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status` gets the port."""
        await serve_http(self._answer, self.rng, task_status)

    def _answer(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        headers = {k.lower(): v.decode() for k, v in request.headers}
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get(b"x-tidings-signature", ""), expected):
            self.bad_signatures += 1
            return 401, b"{}"
        seq, delivery = json.loads(body)["seq"], headers.get(b"x-tidings-delivery", "")
        self.attempts.setdefault(seq, set()).add(delivery)
        if self.rng.random() < 0.1:
            return 500, b"{}"
        self.delivered.setdefault(seq, set()).add(delivery)
        return 200, b"{}"


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and request is None:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


# -- the SMTP recorder -------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd server on a free port (its own thread) that records each recipient."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received: Counter[str] = Counter()
        mailbox = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
                for to in envelope.rcpt_tos:
                    mailbox.received[to] += 1
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port())

    @property
    def url(self) -> str:
        """The smtp:// URL of the recorder."""
        return f"smtp://127.0.0.1:{self.controller.port}"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def smtp_available() -> bool:
    """Whether aiosmtpd (a test dependency) is installed."""
    import importlib.util

    return importlib.util.find_spec("aiosmtpd") is not None


# -- redis ---------------------------------------------------------------------------------------


@asynccontextmanager
async def redis_store(directory: Path) -> AsyncIterator[str]:
    """A `redis-server` of its own (AOF, `appendfsync always`) for the block: its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not on PATH")
    port = _free_port()
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always"]  # fmt: skip
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.02)  # only while it comes up
                    continue
                async with stream:
                    await stream.send_all(b"PING\r\n")
                    if (await stream.receive_some(64)).startswith(b"+PONG"):
                        break
                await trio.sleep(0.02)  # loading
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


# -- one trial -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What a trial did and found."""

    kills: int = 0
    acked: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)  # what the checks looked at
    violations: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def violation(self, kind: str, what: str) -> None:
        """Count a violation of `kind` (and keep its first example)."""
        self.violations[kind] += 1
        self.examples.setdefault(kind, what)


@dataclass
class Load:
    """The load's shared state across the kill and the restart."""

    server: Server
    api_key: str
    token: str
    provider: Provider
    host: HostPlatform
    phones: dict[str, str]  # profile id → phone
    tally: Tally
    rng: random.Random
    inbound: dict[str, tuple[str, bool]] = field(default_factory=dict)  # sid → (phone, acked)
    snoozes: list[tuple[str, float]] = field(default_factory=list)
    emails: set[str] = field(default_factory=set)
    statused: set[str] = field(default_factory=set)
    settled_seq: int = 0  # the events up to here had their webhook delivered when it settled

    @property
    def base(self) -> str:
        return self.server.base

    def ack(self, kind: str) -> None:
        self.tally.acked[kind] += 1


async def post_sms(
    load: Load, client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> bool:
    """POST a signed Twilio webhook; True when the server answered 200."""
    url = load.base + path
    signature = compute_signature(AUTH_TOKEN, url, params)
    try:
        answer = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


async def deliver(load: Load, client: httpx.AsyncClient, sid: str) -> None:
    """(Re)deliver inbound SMS `sid`, as the provider does until it gets a 200."""
    phone, acked = load.inbound[sid]
    params = {"MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": phone, "To": SENDER,
              "Body": f"in {sid}", "NumMedia": "0"}  # fmt: skip
    if await post_sms(load, client, "/sms/inbound", params) and not acked:
        load.inbound[sid] = (phone, True)
        load.ack("inbound sms")


async def sms_worker(load: Load, client: httpx.AsyncClient) -> None:
    rng = load.rng
    while True:
        # now and then a customer writes in a burst: its messages wait in the ticket's
        # mailbox together, and the ticket stores them in one commit (a drain)
        burst = 1 if rng.random() < 0.8 else rng.randint(3, 8)
        phone = rng.choice(list(load.phones.values()))
        sids = [f"SMin{rng.getrandbits(96):024x}" for _ in range(burst)]
        async with trio.open_nursery() as nursery:
            for sid in sids:
                load.inbound[sid] = (phone, False)
                nursery.start_soon(deliver, load, client, sid)
        for sid in sids:
            if rng.random() < 0.3:  # the provider retries the same MessageSid
                await deliver(load, client, sid)
        await trio.sleep(rng.uniform(0.02, 0.08))


async def campaign_worker(load: Load, client: httpx.AsyncClient) -> None:
    rng = load.rng
    while True:
        body = {"profile": rng.choice(list(load.phones)), "kind": "campaign", "source_id": "c1",
                "source_name": "Chaos sale", "body": f"sale {rng.getrandbits(32)}"}  # fmt: skip
        try:
            answer = await client.post(
                load.base + "/api/messages", json=body,
                headers={"Authorization": f"Bearer {load.api_key}"},
            )  # fmt: skip
            if answer.status_code == 200:
                load.ack("campaign sms")
        except httpx.HTTPError:
            pass
        await trio.sleep(rng.uniform(0.1, 0.3))


async def status_worker(load: Load, client: httpx.AsyncClient) -> None:
    rng = load.rng
    while True:
        fresh = [m["sid"] for m in load.provider.messages if m["sid"] not in load.statused]
        for sid in fresh[:10]:
            status = rng.choice(("sent", "delivered", "delivered", "undelivered"))
            if await post_sms(
                load, client, "/sms/status", {"MessageSid": sid, "MessageStatus": status}
            ):
                load.statused.add(sid)
                load.ack("status callback")
        await trio.sleep(0.1)


async def agent_worker(load: Load) -> None:
    rng = load.rng
    ws_base = load.base.replace("http://", "ws://", 1)
    async with open_agent_client(ws_base + "/ws/agent", load.token) as agent:

        async def op(name: str, **args: Any) -> Any:
            """The op's result, None when refused (a dropped connection ends the worker)."""
            try:
                return await agent.call(name, **args)
            except AgentError:
                return None

        while True:
            page = await op("tickets.list", state="open", limit=50)
            tickets = page["tickets"] if page else []
            if tickets:
                ticket = rng.choice(tickets)
                roll = rng.random()
                if roll < 0.6:
                    if await op(
                        "ticket.reply",
                        ticket=ticket["id"],
                        body=f"re {rng.getrandbits(32)}",
                        schedule=True,
                    ):
                        load.ack("agent reply")
                elif roll < 0.8:
                    due = time.time() + rng.uniform(*SNOOZE_S)
                    until = datetime.fromtimestamp(due, UTC).isoformat()
                    if await op(
                        "ticket.set_state", ticket=ticket["id"], state="snoozed", until=until
                    ):
                        load.snoozes.append((ticket["id"], due))
                        load.ack("snooze")
                elif roll < 0.87:
                    if await op("ticket.mark", ticket=ticket["id"], read=True):
                        load.ack("mark read")
                elif roll < 0.94:
                    if await op("profile.block", profile=ticket["profile"]):
                        load.ack("block")
                else:
                    profile = rng.choice(list(load.phones))
                    if await op("profile.unblock", profile=profile):
                        load.ack("unblock")
            await trio.sleep(rng.uniform(0.03, 0.1))


async def visitor_worker(load: Load, n: int) -> None:
    rng = load.rng
    email = f"visitor{n}-{rng.getrandbits(32):08x}@example.com"
    load.emails.add(email)
    session: str | None = None
    ws_base = load.base.replace("http://", "ws://", 1)
    while True:
        async with open_websocket_url(ws_base + "/ws/chat") as ws:
            await ws.send_message(
                json.dumps({"type": "hello", "session": session, "visitor": {"email": email}})
            )
            while True:
                frame = json.loads(await ws.get_message())
                if frame.get("type") == "ready":
                    session = frame["session"]
                    break
            for _ in range(rng.randint(1, 3)):
                client_id = f"c{rng.getrandbits(48):012x}"
                await ws.send_message(
                    json.dumps(
                        {"type": "message", "body": f"chat {client_id}", "client_id": client_id}
                    )
                )
                with trio.move_on_after(3):
                    while True:
                        frame = json.loads(await ws.get_message())
                        if frame.get("type") == "ack" and frame.get("client_id") == client_id:
                            load.ack("chat message")
                            break
                await trio.sleep(rng.uniform(0.05, 0.3))
        await trio.sleep(rng.uniform(0.2, 1.2))  # gone for a while (offline after the grace)


async def _guarded(fn: Any, *args: Any) -> None:
    """Run a load worker; a connection dropped by the kill ends it quietly."""
    try:
        await fn(*args)
    except* DROPPED:
        pass  # the server was killed under it: what it did not get acknowledged is not counted


async def drive(load: Load, seconds: float) -> None:
    """Run the mixed load for `seconds` (or until the server dies)."""
    async with httpx.AsyncClient(timeout=5) as client:
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for worker in (sms_worker, campaign_worker, status_worker):
                    nursery.start_soon(_guarded, worker, load, client)
                nursery.start_soon(_guarded, agent_worker, load)
                for n in range(VISITORS):
                    nursery.start_soon(_guarded, visitor_worker, load, n)


def serve_argv(config: Path, port: int, store: str) -> list[str]:
    """`python -m tidings.transports.cli serve …` for one run of the server."""
    return [
        "-m",
        "tidings.transports.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--store",
        store,
    ]


WANTED = ("console", "demo agent token", "api key")


async def trial(
    store_kind: str, seed: int, tally: Tally, progress: Progress, share: tuple[float, float]
) -> None:
    """One trial: serve, load, kill, restart, settle, check (into `tally`)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="tidings-chaos-") as tmp:
        root = Path(tmp)
        provider = Provider(rng=random.Random(seed + 1))
        host = HostPlatform(rng=random.Random(seed + 2))
        mailbox = Mailbox() if smtp_available() else None
        async with trio.open_nursery() as nursery:
            port = await nursery.start(provider.run)
            host_port = await nursery.start(host.run)
            if mailbox is not None:
                mailbox.controller.start()
            try:
                async with _store(store_kind, root) as url:
                    config = root / "tidings.toml"
                    config.write_text(
                        _config(port, host_port, mailbox.url if mailbox else "outbox"),
                        encoding="utf-8",
                    )
                    await _run(url, config, provider, host, mailbox, rng, tally, progress, share)
            finally:
                if mailbox is not None:
                    mailbox.controller.stop()
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def _store(kind: str, root: Path) -> AsyncIterator[str]:
    if kind == "redis":
        (root / "redis").mkdir()
        async with redis_store(root / "redis") as url:
            yield url
    else:
        yield f"sqlite:///{root / 'chaos.db'}"


def _config(provider_port: int, host_port: int, smtp_url: str) -> str:
    timing = "\n".join(f"{k} = {v}" for k, v in TIMING.items())
    return f"""
[sms]
sender = "{SENDER}"
provider = "twilio"
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
base_url = "http://127.0.0.1:{provider_port}"

[email]
support_address = "support@chaos.example"
smtp_url = "{smtp_url}"

[[webhooks]]
url = "http://127.0.0.1:{host_port}/hook"
secret = "{WEBHOOK_SECRET}"

[timing]
{timing}

[settings.quiet_hours]
start = "00:00"
end = "23:59"
"""


async def _run(url: str, config: Path, provider: Provider, host: HostPlatform,
               mailbox: Mailbox | None, rng: random.Random, tally: Tally, progress: Progress,
               share: tuple[float, float]) -> None:  # fmt: skip
    port = _free_port()
    argv = serve_argv(config, port, url)
    begin, width = share
    async with server_process(argv, WANTED) as server:
        load = Load(
            server,
            server.lines["api key"],
            server.lines["demo agent token"],
            provider,
            host,
            {},
            tally,
            rng,
        )
        async with httpx.AsyncClient(timeout=10) as client:
            for i in range(PROFILES):
                phone = f"+1555{rng.randrange(10**7):07d}"
                answer = await client.post(
                    load.base + "/api/profiles",
                    json={"phone": phone, "consent": {"marketing": True, "transactional": True}},
                    headers={"Authorization": f"Bearer {load.api_key}"},
                )  # fmt: skip
                answer.raise_for_status()
                load.phones[answer.json()["id"]] = phone
                del i
        progress(begin + width * 0.1, "load, then SIGKILL")
        await drive(load, rng.uniform(*KILL_WINDOW))
        server.process.kill()
        await server.process.wait()
        tally.kills += 1
    progress(begin + width * 0.4, "restart")
    async with server_process(argv, WANTED) as server:
        load.server = server
        async with httpx.AsyncClient(timeout=10) as client:
            resend = [
                s for s, (_, acked) in load.inbound.items() if not acked or rng.random() < 0.2
            ]
            for sid in resend:  # the provider retries what was not acknowledged
                await deliver(load, client, sid)
        await drive(load, AFTER_RESTART_S)
        progress(begin + width * 0.6, "settle")
        await _settle(load)
        progress(begin + width * 0.8, "check")
        for violation in await check_store(url):
            tally.violation(f"check:{violation.kind}", violation.line())
    store = await open_store(url)
    try:
        await _verify(store, load, mailbox)
    finally:
        await store.aclose()


async def _settle(load: Load) -> None:
    """Wait until the due snoozes and follow-ups passed and the provider got nothing new
    for a second (at most `SETTLE_MAX_S`)."""
    deadline = trio.current_time() + SETTLE_MAX_S
    # a snooze the load sent but did not see acknowledged may be due up to SNOOZE_S on
    last_due = max((due for _, due in load.snoozes), default=0.0)
    wait_wall = (
        max(last_due, time.time() + SNOOZE_S[1])
        + TIMING["followup_delay_s"]
        + TIMING["offline_grace_s"]
        + 1.0
    )
    seen = -1
    while trio.current_time() < deadline:
        count = len(load.provider.messages)
        load.settled_seq = await _event_seq(load)
        hooked = all(seq in load.host.delivered for seq in range(1, load.settled_seq + 1))
        if count == seen and time.time() >= wait_wall and hooked:
            return
        seen = count
        await trio.sleep(1.0)


async def _event_seq(load: Load) -> int:
    """The server's last event seq (its `/metrics` gauge), 0 when it does not answer."""
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            text = (await client.get(load.base + "/metrics")).text
        except httpx.HTTPError:
            return 0
    gauge = [line for line in text.splitlines() if line.startswith("tidings_event_seq ")]
    return int(float(gauge[0].split()[1])) if gauge else 0


async def _records(store: Store, prefix: str, ids: list[str], kind: type[Any]) -> dict[str, Any]:
    raws = await store.get_many([f"{prefix}{i}" for i in ids])
    return {i: msgspec.json.decode(raw, type=kind) for i, raw in zip(ids, raws, strict=True) if raw}


async def _verify(store: Store, load: Load, mailbox: Mailbox | None) -> None:
    tally = load.tally
    now = time.time()
    # inbound: every acknowledged SMS stored exactly once
    bodies: Counter[str] = Counter()
    outbound: list[Message] = []
    for profile in load.phones:
        ids = [i.decode() for i in await store.log_tail(f"thread:sms:{profile}", 1_000_000)]
        for stored in (await _records(store, "msg:", ids, StoredMessage)).values():
            message = stored.message
            if message.direction == "inbound":
                bodies[message.body] += 1
            else:
                outbound.append(message)
    for sid, (_, acked) in load.inbound.items():
        count = bodies[f"in {sid}"]
        if acked and count == 0:
            tally.violation("inbound_lost", sid)
        if count > 1:
            tally.violation("inbound_twice", f"{sid} stored {count} times")
    # outbound: handed to the provider at most once, and not lost
    load.tally.seen.update({"provider POSTs": sum(load.provider.posts.values())})
    for key, count in load.provider.posts.items():
        if not key:  # without the engine's message id a second send could not be seen
            tally.violation("sms_unidentified", f"{count} POSTs without an Idempotency-Key")
        elif count > 1:
            tally.violation("sms_sent_twice", f"message {key} POSTed {count} times")
    timers = {t.key for t in await store.due_timers(float("inf"), 1_000_000)}
    for message in outbound:
        if (
            message.channel != "sms"
            or load.provider.posts[message.id]
            or message.status == "failed"
        ):
            continue
        if f"send:{message.id}" not in timers:
            tally.violation(
                "sms_lost",
                f"message {message.id} ({message.kind}) is {message.status}, never POSTed",
            )
    # snoozes and follow-ups: fired once, none left behind
    tickets = await _records(store, "ticket:", await members(store, TICKETS), TicketRecord)
    for ticket_id, record in tickets.items():
        if record.ticket.state == "snoozed" and (record.snooze_due or now) < now - 1.0:
            tally.violation(
                "snooze_missed",
                f"ticket {ticket_id} still snoozed {now - (record.snooze_due or now):.1f} s after its due",
            )
        followup = record.ticket.followup
        if (
            followup is not None
            and followup.status == "scheduled"
            and (record.followup_due or now) < now - 1.0
        ):
            tally.violation(
                "followup_missed", f"ticket {ticket_id}: follow-up still scheduled past its due"
            )
    await _events(store, load, tickets, mailbox)
    await _webhooks(store, load)


class _EventSeq(msgspec.Struct):
    seq: int


class _Waiting(msgspec.Struct):
    """What the check reads of a stored pending webhook delivery."""

    body: _EventSeq
    failures: int = 0


async def _webhooks(store: Store, load: Load) -> None:
    """Every event up to the settled seq delivered to the host platform, or still stored
    as a pending delivery in its backoff (the host answers one POST in ten with 500, so a
    few events fail three or four times running and wait past the settle window: they
    are late, not lost), under one delivery id (retries keep it), every signature valid."""
    host, tally = load.host, load.tally
    waiting = {
        record.body.seq
        for record in (
            await _records(store, "webhook:", await members(store, PENDING), _Waiting)
        ).values()
        if record.failures > 0
    }
    tally.seen.update({"webhook deliveries": sum(len(ids) for ids in host.delivered.values()),
                       "events checked for webhooks": load.settled_seq,
                       "webhook deliveries in backoff at the check": len(waiting)})  # fmt: skip
    for seq in range(1, load.settled_seq + 1):
        if seq not in host.delivered and seq not in waiting:
            tally.violation("webhook_lost", f"event {seq} never answered 200 by the host")
    for seq, ids in host.attempts.items():
        if len(ids) > 1:
            tally.violation("webhook_ids_differ", f"event {seq} came as {len(ids)} deliveries")
    if host.bad_signatures:
        tally.violation("webhook_bad_signature", f"{host.bad_signatures} POSTs badly signed")


async def _events(
    store: Store, load: Load, tickets: dict[str, TicketRecord], mailbox: Mailbox | None
) -> None:
    """Snooze transitions and follow-ups as the event log tells them."""
    states: dict[str, str] = {}
    snoozed: Counter[str] = Counter()
    woken: Counter[str] = Counter()
    followups: Counter[str] = Counter()
    seq = 0
    while True:
        page = await store.events_since(seq, 10_000)
        if not page:
            break
        seq = page[-1][0]
        for _, payload in page:
            event = msgspec.json.decode(payload)
            data = event.get("data", {})
            if event.get("event") in ("ticket.created", "ticket.updated"):
                ticket = data["ticket"]
                before, after = states.get(ticket["id"]), ticket["state"]
                if before != "snoozed" and after == "snoozed":
                    snoozed[ticket["id"]] += 1
                elif before == "snoozed" and after != "snoozed":
                    woken[ticket["id"]] += 1
                states[ticket["id"]] = after
            elif event.get("event") == "followup.sent":
                followups[data["ticket"]] += 1
    load.tally.seen.update(
        {"wake-ups": sum(woken.values()), "follow-ups sent": sum(followups.values())}
    )
    for ticket_id, count in woken.items():
        if count > snoozed[ticket_id]:
            load.tally.violation(
                "snooze_woke_twice",
                f"ticket {ticket_id}: {count} wake-ups, {snoozed[ticket_id]} snoozes",
            )
    if mailbox is None:
        return
    sent: Counter[str] = Counter()
    for ticket_id, count in followups.items():
        record = tickets.get(ticket_id)
        if record is not None and record.email:
            sent[record.email] += count
    for email in load.emails:
        if mailbox.received[email] != sent[email]:
            load.tally.violation(
                "followup_mail_mismatch",
                f"{email}: {mailbox.received[email]} e-mails, {sent[email]} follow-ups sent",
            )


# -- the scenario --------------------------------------------------------------------------------


@scenario("chaos", repeats=1, quick_repeats=1, options=("trials", "store"))
def chaos(
    quick: bool, progress: Progress, trials: int | None = None, store: str | None = None
) -> list[Row]:
    """SIGKILL under mixed load, restart, settle: inbound, outbound, timers and invariants."""
    n = trials if trials is not None else (2 if quick else 20)
    kind = store or "sqlite"
    if kind not in ("sqlite", "redis"):
        raise ValueError(f"--store must be sqlite or redis, not {kind!r}")
    if not smtp_available():
        print(
            "chaos: aiosmtpd is not installed: follow-up e-mails are not counted (pip install 'tidings[test]')"
        )
    tally = Tally()
    started = time.perf_counter()
    for i in range(n):
        trio.run(trial, kind, 1000 + i, tally, progress, (i / n, 1 / n))
    seconds = time.perf_counter() - started
    progress(1.0, "done")
    acked = sum(tally.acked.values())
    kinds = sorted({*KINDS, *tally.violations})
    print(f"chaos on {kind}: {n} trials, {tally.kills} kills, {acked} operations acknowledged "
          f"({', '.join(f'{k} {v}' for k, v in sorted(tally.acked.items()))}), {seconds:.0f} s")  # fmt: skip
    print(f"  checked: {', '.join(f'{k} {v}' for k, v in sorted(tally.seen.items()))}")
    for k in kinds:
        example = f"  e.g. {tally.examples[k]}" if k in tally.examples else ""
        print(f"  {k}: {tally.violations[k]}{example}")
    rows = [
        row(f"trials ({kind})", n, "trials"),
        row(f"kills ({kind})", tally.kills, "SIGKILLs"),
        row(f"operations acknowledged ({kind})", acked, "ops",
            note=", ".join(f"{k} {v}" for k, v in sorted(tally.acked.items()))),
        row(f"checked: provider POSTs ({kind})", tally.seen["provider POSTs"], "POSTs"),
        row(f"checked: snooze wake-ups ({kind})", tally.seen["wake-ups"], "wake-ups"),
        row(f"checked: follow-ups sent ({kind})", tally.seen["follow-ups sent"], "e-mails"),
        row(f"checked: webhook deliveries ({kind})", tally.seen["webhook deliveries"], "POSTs"),
        row(f"checked: webhook deliveries in backoff at the check ({kind})",
            tally.seen["webhook deliveries in backoff at the check"], "deliveries"),  # fmt: skip
        row(f"violations, all kinds ({kind})", sum(tally.violations.values()), "violations", better="lower"),
    ]  # fmt: skip
    rows += [
        row(f"violations: {k} ({kind})", tally.violations[k], "violations", better="lower",
            note=tally.examples.get(k))
        for k in kinds
    ]  # fmt: skip
    rows.append(row(f"wall time ({kind})", seconds, "s", better="lower"))
    return rows
