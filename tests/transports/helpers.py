"""What several transport tests share: the test config and its tokens, a recording
SMTP server, and a stand-in of Twilio's Messages REST API. (Test modules import from
here, never from each other or from a conftest.)"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import msgspec
import trio
from aiosmtpd.controller import Controller
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from trio_websocket import WebSocketConnection

from tidings.bench.redis_server import free_port
from tidings.transports.config import load_config
from tidings.transports.provider_http import Answer
from tidings.transports.provider_http import Request as HttpRequest

AUTH_TOKEN = "twilio-secret"
AGENT_TOKEN = "agent-token"
MANAGER_TOKEN = "manager-token"


def make_config(**overrides: Any) -> Any:
    """A test config: memory store, port 0, a signed webhook, agents of several roles."""
    config = load_config(None, {"server.port": 0, "server.store": "memory://"})
    raw = msgspec.to_builtins(config)
    raw["sms"].update(sender="+15550001111", auth_token=AUTH_TOKEN)
    raw["email"]["support_address"] = "support@acme.example"
    raw["agents"] = [
        {"id": "a1", "name": "Sam", "role": "support", "token": AGENT_TOKEN},
        {"id": "a2", "name": "Ana", "role": "analyst", "token": "analyst-token"},
        {"id": "a3", "name": "Max", "role": "manager", "token": MANAGER_TOKEN},
    ]
    raw["api"]["keys"] = ["api-key"]
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return msgspec.convert(raw, type=type(config))


@dataclass
class Recorder:
    """An aiosmtpd handler that records what it received and can refuse on command."""

    received: list[Any] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> SMTP answer
    data_answer: str = "250 Message accepted for delivery"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_answer.startswith("250"):
            self.received.append(envelope)
        return self.data_answer


@asynccontextmanager
async def smtp_server(recorder: Recorder, **kwargs: Any) -> AsyncIterator[int]:
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
    await trio.to_thread.run_sync(controller.start)
    try:
        yield port
    finally:
        await trio.to_thread.run_sync(controller.stop)


def parsed(envelope: Any) -> EmailMessage:
    # SMTP carries CRLF line ends; compare with the LF text that was handed over
    raw = envelope.original_content.replace(b"\r\n", b"\n")
    message = message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


TWILIO_SID = "AC0123456789"
TWILIO_TOKEN = "s3cret"
POOL_NUMBER = "+15550007777"  # the number TwilioStandIn sends a Messaging Service's SMS from


@dataclass
class TwilioStandIn:
    """A stand-in of Twilio's Messages endpoint (`POST` creates, `GET` lists, newest
    first, filtered by `To`, `From` and `DateSent>`): checks basic auth, counts every
    POST (`posts`), records each form it accepted, and follows a script of behaviours
    for successive POSTs: "ok", "500", "400", "opted-out" (400 with code 21610), "slow"
    (taken, answered after 2 s) or
    "hold" (taken, then never answered: `holding` is set, for a test to kill the
    client meanwhile). `lookups` records each list query; `created_status` is what a
    created message reports. `app()` is its ASGI app; `exchange()` serves it in-process
    (without a socket, for tests on a MockClock)."""

    script: list[str] = field(default_factory=list)
    accepted: list[list[tuple[str, str]]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    lookups: list[dict[str, str]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    created_status: str = "queued"
    clock: Callable[[], float] = time.time  # the wall clock of `date_created`
    posts: int = 0
    base_url: str = ""
    holding: trio.Event = field(default_factory=trio.Event)
    looked_up: trio.Event = field(default_factory=trio.Event)  # set by each list query

    def _refusal(self, request: Request) -> Response | None:
        if request.path_params["sid"] != TWILIO_SID:
            return JSONResponse({"code": 20404, "message": "Not found"}, status_code=404)
        expected = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
        return None

    async def create(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        self.posts += 1
        # request.form() would need python-multipart, which is not a dependency
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        self.keys.append(request.headers.get("idempotency-key", ""))
        behaviour = self.script.pop(0) if self.script else "ok"
        if behaviour == "500":
            return JSONResponse(
                {"code": 20500, "message": "Internal Server Error"}, status_code=500
            )
        if behaviour == "400":
            return JSONResponse(
                {"code": 21211, "message": "Invalid 'To' Phone Number"}, status_code=400
            )
        if behaviour == "opted-out":
            return JSONResponse(
                {"code": 21610, "message": "Attempt to send to unsubscribed recipient"},
                status_code=400,
            )
        self.accepted.append(pairs)
        form = dict(pairs)
        now = format_datetime(datetime.fromtimestamp(self.clock(), UTC), usegmt=True)
        service = form.get("MessagingServiceSid")
        message = {
            "sid": f"SM{len(self.messages) + 1}", "to": form.get("To"),
            # a Messaging Service sends from a number of its pool
            "from": POOL_NUMBER if service else form.get("From"),
            "messaging_service_sid": service,
            "body": form.get("Body", ""), "status": self.created_status,
            "date_created": now, "date_sent": now, "direction": "outbound-api",
        }  # fmt: skip
        self.messages.insert(0, message)
        if behaviour == "slow":  # taken, but the answer comes too late for the client
            await trio.sleep(2)
        elif behaviour == "hold":
            self.holding.set()
            await trio.sleep_forever()
        return JSONResponse(message, status_code=201)

    async def list(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        query = dict(request.query_params)
        self.lookups.append(query)
        self.looked_up.set()
        day = query.get("DateSent>", "")
        found = [
            m for m in self.messages
            if m["to"] == query.get("To", m["to"]) and m["from"] == query.get("From", m["from"])
            and _day(m["date_sent"]) >= day
        ]  # fmt: skip
        return JSONResponse({"messages": found, "next_page_uri": None, "page": 0})

    def app(self) -> Starlette:
        """The endpoints as an ASGI app."""
        path = "/2010-04-01/Accounts/{sid}/Messages.json"
        return Starlette(
            routes=[
                Route(path, self.create, methods=["POST"]),
                Route(path, self.list, methods=["GET"]),
            ]
        )


    def exchange(self) -> InProcessExchange:
        """A provider client's `Exchange` answered by `app()` in this process."""
        return InProcessExchange(self.app())


class InProcessExchange:
    """An `Exchange` (tidings.transports.provider_http) answered by an ASGI app in this
    process, through httpx's ASGI transport."""

    def __init__(self, app: Starlette) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://twilio.test"
        )

    async def request(self, request: HttpRequest, timeout: float) -> Answer:
        r = await self._client.request(
            request.method.decode(),
            request.target.decode(),
            headers=request.headers,
            content=request.body,
        )
        return Answer(r.status_code, dict(r.headers), r.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def _day(rfc2822: str) -> str:
    return parsedate_to_datetime(rfc2822).date().isoformat()


@asynccontextmanager
async def twilio_stand_in(script: list[str] | None = None) -> AsyncIterator[TwilioStandIn]:
    """A `TwilioStandIn` served on a local socket while the block runs."""
    fake = TwilioStandIn(script=list(script or []))
    app = fake.app()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.1
    config.accesslog = None
    config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                app, config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        fake.base_url = binds[0]
        try:
            yield fake
        finally:
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 2


# -- WebSocket clients --------------------------------------------------------------------


def ws_url(server: Any, path: str) -> str:
    return server.base_url.replace("http://", "ws://") + path


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def call(ws: WebSocketConnection, rid: int, op: str, **args: Any) -> dict[str, Any]:
    """Send a request; return its reply (skipping event frames)."""
    await ws.send_message(json.dumps({"id": rid, "op": op, **args}))
    while True:
        frame = await recv(ws)
        if frame.get("id") == rid:
            return frame
