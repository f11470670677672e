"""Outbound webhooks to the host platform (PROTOCOL.md, contract v3, *Team workflow*):
the `[[webhooks]]` config, the body, headers and signature, retries with backoff for 24 h,
delivery through failures (500s, timeouts, connection refused), isolation from the inbox,
`/metrics`, and pending deliveries across a kill -9 of a real `tidings serve`."""

from __future__ import annotations

import hashlib
import hmac
import json
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
            lambda task_status: serve(
                app, config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        receiver.url = f"{binds[0]}/hook"
        try:
            yield receiver
        finally:
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 2


async def until(condition: Callable[[], bool], timeout: float = 20.0, every: float = 0.02) -> None:
    """Wait for `condition`, looking every `every` s (the receiver and the server answer
    elsewhere, in their own tasks or processes)."""
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - polled across processes and tasks
            await trio.sleep(every)


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
        (
            '[[webhooks]]\nurl = "https://h.example"\nsecret = "s"\nretries = 3\n',
            "webhooks[0].retries: unknown key",
        ),  # fmt: skip
        (
            '[[webhooks]]\nurl = "https://h.example"\nsecret = 1\n',
            "webhooks[0].secret: expected string, got integer",
        ),  # fmt: skip
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


# -- failures: 500s, connection refused, timeouts -------------------------------------------


async def test_a_500_and_a_refused_connection_are_retried_with_the_same_delivery_id() -> None:
    refused_port = free_port()  # nothing listens there until the receiver comes up
    async with receiving(Receiver(script=["500"])) as flaky:
        late = Receiver()
        config = with_webhooks(
            WebhookConfig(url=flaky.url, secret=SECRET, events=["ticket.created"]),
            WebhookConfig(
                url=f"http://127.0.0.1:{refused_port}/hook",
                secret=SECRET,
                events=["ticket.created"],
            ),
        )
        async with running_server(config) as running:
            await post_sms(running.base_url, "SM1")
            await until(lambda: len(flaky.delivered()) == 1)  # after the first retry, 1 s on
            async with receiving(late, refused_port):
                await until(lambda: len(late.delivered()) == 1)
            metrics = await scrape(running.base_url)
    first, second = flaky.arrivals
    assert (first.answer, second.answer) == ("500", "200")
    assert first.delivery == second.delivery and first.raw == second.raw
    assert 0.9 <= second.at - first.at < 2.0  # the first retry, within 2 s
    [arrived] = late.arrivals
    assert arrived.signed and arrived.event == "ticket.created"
    assert metrics["tidings_webhooks_delivered"]["tidings_webhooks_delivered_total"] == 2
    # the 500, and at least one refused connection before the receiver came up
    assert metrics["tidings_webhooks_retried"]["tidings_webhooks_retried_total"] >= 2
    assert metrics["tidings_webhooks_failed"]["tidings_webhooks_failed_total"] == 0


@asynccontextmanager
async def mock_inbox(store: MemoryStore | None = None) -> AsyncIterator[Inbox]:
    """An inbox on the memory store whose wall clock follows trio's (mock) clock."""
    async with open_inbox(
        store or MemoryStore(), account=ACCOUNT, sms=OutboxSms(), mail=OutboxMail(),
        clock=TrioWallClock(START),
    ) as inbox:  # fmt: skip
        yield inbox


@pytest.mark.parametrize("mock_clock", [trio.testing.MockClock(autojump_threshold=0.1)])
async def test_no_answer_in_10_s_is_a_failed_attempt_retried_1_s_later(
    mock_clock: trio.testing.MockClock,
) -> None:
    # a real receiver in this process; the clock jumps only when everything waits
    async with receiving(Receiver(script=["hang"])) as slow, mock_inbox() as inbox:
        hooks = [WebhookConfig(url=slow.url, secret=SECRET, events=["ticket.created"])]
        async with running_webhooks(hooks, inbox) as webhooks:
            await inbox.receive_sms("SM1", PHONE, "hello")
            await until(lambda: webhooks.delivered == 1, timeout=60)
    first, second = slow.arrivals
    assert first.answer == "hang" and second.answer == "200"
    assert first.delivery == second.delivery
    assert 11.0 <= second.at - first.at < 11.5  # 10 s without an answer, then 1 s of backoff
    assert webhooks.retried == 1


def failing_client(times: list[float]) -> httpx.AsyncClient:
    """An HTTP client whose every POST is answered 500 (no network: the mock clock may
    jump freely); `times` gets the trio time of each."""

    async def answer(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        return httpx.Response(500)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_retries_double_from_1_s_to_10_minutes_and_stop_after_24_hours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []
    async with mock_inbox() as inbox:
        hooks = [
            WebhookConfig(url="http://host.test/hook", secret=SECRET, events=["ticket.created"])
        ]
        async with running_webhooks(hooks, inbox, client=failing_client(times)) as webhooks:
            await inbox.receive_sms("SM1", PHONE, "hello")
            await until(lambda: webhooks.failed == 1, timeout=2 * RETRY_FOR_S, every=60)
            pending = await inbox.engine.store.index_count(PENDING, frozenset())
    waits = [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)]
    assert waits[:11] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, MAX_RETRY_S]
    assert set(waits[10:]) == {MAX_RETRY_S}
    assert RETRY_FOR_S <= times[-1] - times[0] < RETRY_FOR_S + MAX_RETRY_S  # 24 h, not more
    assert (webhooks.retried, webhooks.failed, webhooks.delivered) == (len(times) - 1, 1, 0)
    assert pending == 0  # given up: no longer stored
    assert [retry_delay(n) for n in (1, 2, 10, 11, 40)] == [1, 2, 512, MAX_RETRY_S, MAX_RETRY_S]


async def test_a_dead_receiver_holds_up_neither_the_inbox_nor_another_webhook(
    autojump_clock: trio.testing.MockClock,
) -> None:
    healthy: list[int] = []
    dead_calls = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal dead_calls
        if request.url.host == "dead.test":
            dead_calls += 1
            await trio.sleep_forever()  # never answers: each attempt times out
        healthy.append(json.loads(request.content)["seq"])
        return httpx.Response(204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    async with mock_inbox() as inbox:
        hooks = [
            WebhookConfig(url="http://dead.test/hook", secret=SECRET),
            WebhookConfig(url="http://alive.test/hook", secret=SECRET),
        ]
        async with running_webhooks(hooks, inbox, client=client, concurrency=2) as webhooks:
            for i in range(30):
                await inbox.receive_sms(f"SM{i}", f"+1555123{i:04d}", "hello")
            await until(lambda: len(healthy) == inbox.last_seq)
            pending = await inbox.engine.store.index_count(PENDING, frozenset())
    assert sorted(healthy) == list(range(1, inbox.last_seq + 1))
    assert dead_calls >= 2 and webhooks.delivered == len(healthy)
    assert pending == inbox.last_seq  # every event still waits for the dead receiver


async def test_a_new_webhook_starts_from_now_and_events_while_stopped_are_delivered_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    seqs: list[int] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        seqs.append(json.loads(request.content)["seq"])
        await trio.lowlevel.checkpoint()
        return httpx.Response(200)

    hooks = [WebhookConfig(url="http://host.test/hook", secret=SECRET)]
    async with mock_inbox(store) as inbox:
        await inbox.receive_sms("SM1", PHONE, "before the webhook")
        await trio.sleep(5)  # (mock time) its autoresponse is sent too
        before = inbox.last_seq
        async with running_webhooks(hooks, inbox, client=httpx.AsyncClient(
            transport=httpx.MockTransport(answer))):  # fmt: skip
            await inbox.receive_sms("SM2", PHONE, "with the webhook")
            await until(lambda: len(seqs) == inbox.last_seq - before)
        running_until = inbox.last_seq
        await inbox.receive_sms("SM3", PHONE, "while it is stopped")
    async with mock_inbox(store) as inbox:
        async with running_webhooks(hooks, inbox, client=httpx.AsyncClient(
            transport=httpx.MockTransport(answer))):  # fmt: skip
            await until(lambda: len(seqs) == inbox.last_seq - before)
    assert inbox.last_seq > running_until > before > 0
    assert sorted(seqs) == list(range(before + 1, inbox.last_seq + 1))


# -- pending deliveries across a kill -9 ----------------------------------------------------


async def test_pending_deliveries_survive_kill_9_and_keep_their_delivery_ids(
    tmp_path: Path, store_url: str
) -> None:
    async with receiving(Receiver(script=["500"] * 10_000)) as receiver:
        config = tmp_path / "c.toml"
        config.write_text(f'[[webhooks]]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n')
        command = [*SERVE, "--config", str(config), "--port", "0", "--store", store_url]
        async with serving(command, child_env()) as served:
            for i in range(3):
                await post_sms(served.base, f"SM{i}", f"message {i}")
            await until(lambda: len({a.delivery for a in receiver.arrivals}) >= 5)
            for i in range(3, 6):  # some of these may not have deliveries written yet
                await post_sms(served.base, f"SM{i}", f"message {i}")
            served.kill()
        failed_before = {a.delivery for a in receiver.arrivals}
        receiver.script.clear()  # the receiver is back
        async with serving(command, child_env()) as served:
            metrics = await scrape(served.base)
            last = int(metrics["tidings_event_seq"]["tidings_event_seq"])
            await until(lambda: set(receiver.delivered()) >= set(range(1, last + 1)), timeout=30)
    assert last >= 6 * 2  # at least a message.created and a ticket.created per SMS
    by_seq: dict[int, set[str]] = {}
    for arrival in receiver.arrivals:
        by_seq.setdefault(arrival.body["seq"], set()).add(arrival.delivery)
    # one delivery id per event, kept across the crash: retries, never a second delivery
    assert all(len(ids) == 1 for ids in by_seq.values()), by_seq
    delivered_ids = {a.delivery for a in receiver.delivered().values()}
    assert failed_before <= delivered_ids
