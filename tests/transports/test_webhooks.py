"""Outbound webhooks to the host platform (PROTOCOL.md, contract v3, *Team workflow*):
the `[[webhooks]]` config, the body, headers and signature, retries with backoff for 24 h,
delivery through failures (500s, timeouts, connection refused), isolation from the inbox,
`/metrics`, and pending deliveries across a kill -9 of a real `tidings serve`."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.actors.helpers import ACCOUNT, PHONE, START
from tests.transports.helpers import free_port, make_config
from tests.transports.serve_process import SERVE, child_env, serving
from tests.transports.test_metrics import scrape
from tidings.actors.inbox import Inbox, open_inbox
from tidings.engine import TrioWallClock
from tidings.engine.store.memory import MemoryStore
from tidings.transports.config import ConfigError, WebhookConfig, load_config
from tidings.transports.mail import OutboxMail
from tidings.transports.server import running_server
from tidings.transports.sms_providers import OutboxSms
from tidings.transports.webhooks import (
    MAX_RETRY_S,
    PENDING,
    RETRY_FOR_S,
    Webhooks,
    retry_delay,
    running_webhooks,
)

SECRET = "hook-secret"


# -- a real receiver ------------------------------------------------------------------------


@dataclass
class Arrival:
    """One request the receiver got, and what it answered."""

    delivery: str
    event: str
    body: dict[str, Any]
    raw: bytes
    signed: bool  # the signature matched the receiver's secret
    answer: str
    at: float  # trio time


@dataclass
class Receiver:
    """The host platform's endpoint: checks `X-Tidings-Signature` with its own copy of
    the secret, records every request, and answers by `script` ("500", "hang": no
    answer for an hour, else 200), then 200."""

    secret: str = SECRET
    script: list[str] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    url: str = ""

    async def endpoint(self, request: Request) -> Response:
        raw = await request.body()
        expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers.get("x-tidings-signature", ""), expected)
        answer = self.script.pop(0) if self.script else "200"
        self.arrivals.append(
            Arrival(
                request.headers.get("x-tidings-delivery", ""),
                request.headers.get("x-tidings-event", ""),
                json.loads(raw),
                raw,
                signed,
                answer,
                trio.current_time(),
            )
        )
        if answer == "hang":
            await trio.sleep(3600)
        return Response(status_code=500 if answer == "500" else 200)

    def delivered(self) -> dict[int, Arrival]:
        """The arrivals answered 200 and correctly signed, by event seq."""
        return {a.body["seq"]: a for a in self.arrivals if a.answer == "200" and a.signed}


@asynccontextmanager
async def receiving(receiver: Receiver, port: int = 0) -> AsyncIterator[Receiver]:
    """Serve `receiver` on a local port while the block runs."""
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 0.1
    config.accesslog = config.errorlog = None
    app = Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])])
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
        )
        receiver.url = f"{binds[0]}/hook"
        try:
            yield receiver
        finally:
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 2


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


async def post_sms(base: str, sid: str, body: str = "hello") -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{base}/sms/inbound", data={"MessageSid": sid, "From": PHONE, "Body": body}
        )
    assert answer.status_code == 200


def with_webhooks(*hooks: WebhookConfig) -> Any:
    """The test config (unsigned inbound SMS, for brevity) with `hooks`."""
    return msgspec.structs.replace(make_config(**{"sms.auth_token": ""}), webhooks=list(hooks))


async def logged_events(inbox: Inbox) -> dict[int, dict[str, Any]]:
    """Every event in the inbox's log, by seq."""
    found: dict[int, dict[str, Any]] = {}
    if inbox.last_seq == 0:
        return found
    async for seq, payload in inbox.events(0):
        found[seq] = msgspec.json.decode(payload)
        if seq >= inbox.last_seq:
            return found
    return found


# -- the config -----------------------------------------------------------------------------


def config_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {}, env or {})
    return str(info.value)


def test_webhooks_config_is_read_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[webhooks]]\nurl = "https://host.example/tidings?k=1"\nsecret = "s"\n'
        'events = ["ticket.created", "message.created"]\n'
        '[[webhooks]]\nurl = "http://127.0.0.1:9/hook"\nsecret = "t"\n'
    )
    config = load_config(str(path), {}, {})
    assert config.webhooks == [
        WebhookConfig(
            url="https://host.example/tidings?k=1",
            secret="s",
            events=["ticket.created", "message.created"],
        ),
        WebhookConfig(url="http://127.0.0.1:9/hook", secret="t", events=[]),
    ]
    env = {"TIDINGS_WEBHOOKS": '[{"url": "https://h.example/x", "secret": "e"}]'}
    assert load_config(str(path), {}, env).webhooks == [
        WebhookConfig(url="https://h.example/x", secret="e")
    ]
    assert load_config(None, {}, {}).webhooks == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[webhooks]]\nsecret = "s"\n', "webhooks[0].url: required"),
        (
            '[[webhooks]]\nurl = "https://h.example"\n',
            "webhooks[0].secret: required: every delivery is signed with it",
        ),
        (
            '[[webhooks]]\nurl = "ftp://h.example"\nsecret = "s"\n',
            "webhooks[0].url: must be an http:// or https:// URL",
        ),
        (
            '[[webhooks]]\nurl = "https://h.example/#x"\nsecret = "s"\n',
            "webhooks[0].url: must not have a fragment",
        ),
        (
            '[[webhooks]]\nurl = "https://h.example"\nsecret = "s"\nevents = ["ticket.made"]\n',
            "webhooks[0].events[0]: unknown event 'ticket.made' (known: badge, followup.scheduled, "
            "followup.sent, message.created, message.status, ticket.created, ticket.updated, "
            "visitor.offline, visitor.online, visitor.typing)",
        ),
        (
            '[[webhooks]]\nurl = "https://h.example"\nsecret = "s"\n'
            '[[webhooks]]\nurl = "https://h.example"\nsecret = "t"\n',
            "webhooks[1].url: the same url is given to another webhook",
        ),
        ('[[webhooks]]\nurl = "https://h.example"\nsecret = "s"\nretries = 3\n',
         "webhooks[0].retries: unknown key"),  # fmt: skip
        ('[[webhooks]]\nurl = "https://h.example"\nsecret = 1\n',
         "webhooks[0].secret: expected string, got integer"),  # fmt: skip
    ],
)
def test_bad_webhooks_config_is_a_config_error_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    assert config_error(tmp_path, text) == message


def test_bad_webhooks_variable_is_a_config_error_naming_it(tmp_path: Path) -> None:
    assert (
        config_error(tmp_path, "", {"TIDINGS_WEBHOOKS": '[{"url": "https://h.example"}]'})
        == "TIDINGS_WEBHOOKS[0].secret: required: every delivery is signed with it"
    )
    assert (
        config_error(tmp_path, "", {"TIDINGS_WEBHOOKS__URL": "https://h.example"})
        == "TIDINGS_WEBHOOKS__URL: set [[webhooks]] as a whole: TIDINGS_WEBHOOKS, a JSON list"
    )


# -- the contract's body, headers and signature, through a real server ----------------------


async def test_each_event_is_posted_signed_with_the_contract_body_and_headers() -> None:
    async with receiving(Receiver()) as every, receiving(Receiver()) as tickets:
        config = with_webhooks(
            WebhookConfig(url=every.url, secret=SECRET),
            WebhookConfig(url=tickets.url, secret=SECRET, events=["ticket.created"]),
        )
        async with running_server(config) as running:
            await post_sms(running.base_url, "SM1")
            # the autoresponse is sent, and its status recorded: nothing more happens
            await until(lambda: running.inbox.last_seq == 5)
            logged = await logged_events(running.inbox)
            await until(lambda: every.delivered().keys() == logged.keys())
            await until(lambda: len(tickets.delivered()) == 1)
            metrics = await scrape(running.base_url)
    assert {e["event"] for e in logged.values()} >= {"ticket.created", "message.created"}
    for seq, event in logged.items():
        arrival = every.delivered()[seq]
        assert arrival.signed
        assert list(arrival.body) == ["id", "event", "seq", "data", "created_at"]
        assert arrival.body["id"] == arrival.delivery
        assert arrival.body["event"] == arrival.event == event["event"]
        assert arrival.body["data"] == event["data"]
        assert arrival.body["created_at"].endswith("+00:00")
    assert len({a.delivery for a in every.arrivals}) == len(every.arrivals)
    [only] = tickets.arrivals
    assert only.event == "ticket.created"
    delivered = len(logged) + 1
    assert metrics["tidings_webhooks_delivered"]["tidings_webhooks_delivered_total"] == delivered
    assert metrics["tidings_webhooks_retried"]["tidings_webhooks_retried_total"] == 0
    assert metrics["tidings_webhooks_failed"]["tidings_webhooks_failed_total"] == 0
