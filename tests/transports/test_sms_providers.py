"""Outbound SMS providers: the outbox, and the Twilio REST client against fake endpoints
(a scripted `Exchange` for the unit cases, the REST API's stand-in of
tests/transports/helpers.py on a socket for the rest)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import pytest
import trio

from tests.transports.helpers import TWILIO_SID as SID
from tests.transports.helpers import TWILIO_TOKEN as TOKEN
from tests.transports.helpers import TwilioStandIn, twilio_stand_in
from tidings.actors.outbound import DeliveryError, OutboundSms, SmsProvider, SmsReceipt
from tidings.transports.provider_http import Answer, NoAnswer, NotSent, Request
from tidings.transports.release import version
from tidings.transports.sms_providers import OutboxSms, TwilioError, TwilioSms

SMS = OutboundSms(
    message_id="m-1",
    to="+393331234567",
    sender="+15550001111",
    body="Ciao! Il tuo ordine è partito 📦",
    media=("https://cdn.acme.example/a.gif", "https://cdn.acme.example/b.png"),
)
CALLBACK = "https://support.acme.example/sms/status"


def expected_form() -> list[tuple[str, str]]:
    """The form fields Twilio gets for `SMS`, in order."""
    return [
        ("To", SMS.to),
        ("From", SMS.sender),
        ("Body", SMS.body),
        ("MediaUrl", SMS.media[0]),
        ("MediaUrl", SMS.media[1]),
        ("StatusCallback", CALLBACK),
    ]


def answer(status: int, body: object = b"", **headers: str) -> Answer:
    """An answer with `body` (bytes as they are, anything else as JSON)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(status, {k.lower().replace("_", "-"): v for k, v in headers.items()}, content)


def created(sid: str = "SM1", status: str = "queued") -> Answer:
    return answer(201, {"sid": sid, "status": status, "to": SMS.to})


def refused(status: int, code: int, message: str) -> Answer:
    return answer(
        status, {"code": code, "message": message, "more_info": "https://x", "status": status}
    )


@dataclass
class Got:
    """A request the scripted provider got."""

    method: str
    target: str
    headers: dict[str, str]
    content: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.target.partition("?")[2]))


@dataclass
class Scripted:
    """An `Exchange` answering each request with the next scripted answer (or raising
    it); it keeps the requests and when each came."""

    answers: list[Answer | Exception]
    requests: list[Got] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    closed: bool = False

    async def request(self, request: Request, timeout: float) -> Answer:
        await trio.lowlevel.checkpoint()
        named = {k.decode(): v.decode() for k, v in request.headers}
        self.requests.append(
            Got(request.method.decode(), request.target.decode(), named, request.body)
        )
        self.times.append(trio.current_time())
        reply = self.answers.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def aclose(self) -> None:
        self.closed = True


def scripted(*answers: Answer | Exception) -> Scripted:
    return Scripted(list(answers))


def provider(exchange: Scripted, **kwargs: object) -> TwilioSms:
    options: dict[str, object] = {
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.004,
        "jitter": lambda: 0.5,
    }
    options.update(kwargs)
    return TwilioSms(
        SID,
        TOKEN,
        "http://twilio.test/",
        CALLBACK,
        exchange,
        **options,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- outbox


async def test_outbox_records_and_answers_sent() -> None:
    outbox: SmsProvider = OutboxSms()
    receipt = await outbox.send(SMS)
    assert receipt == SmsReceipt(provider_id="outbox-m-1", status="sent")
    assert isinstance(outbox, OutboxSms) and list(outbox.sent) == [SMS]
    await outbox.aclose()


async def test_r30_outbox_records_a_retried_message_once() -> None:
    outbox = OutboxSms()
    first = await outbox.send(SMS)
    again = await outbox.send(SMS)
    other = await outbox.send(OutboundSms(message_id="m-2", to=SMS.to, sender=SMS.sender, body="2"))
    assert first == again
    assert other.provider_id == "outbox-m-2"
    assert [s.message_id for s in outbox.sent] == ["m-1", "m-2"]
    assert outbox.receipt("m-1") == first and outbox.receipt("nope") is None


async def test_outbox_remembers_only_the_newest_sends() -> None:
    outbox = OutboxSms(kept=2)
    for i in range(1, 4):
        await outbox.send(OutboundSms(message_id=f"m-{i}", to=SMS.to, sender=SMS.sender, body="b"))
    assert [s.message_id for s in outbox.sent] == ["m-2", "m-3"]
    assert outbox.receipt("m-1") is None and outbox.receipt("m-3") is not None


async def test_outbox_failures_can_be_injected() -> None:
    outbox = OutboxSms()
    outbox.fail_next(DeliveryError("down"), times=2)
    for _ in range(2):
        with pytest.raises(DeliveryError):
            await outbox.send(SMS)
    assert not outbox.sent
    assert (await outbox.send(SMS)).status == "sent"


# ---------------------------------------------------------------- twilio, mocked transport


async def test_twilio_posts_the_protocol_request() -> None:
    exchange = scripted(created("SM42", "queued"))
    twilio = provider(exchange)
    receipt = await twilio.send(SMS)
    assert receipt == SmsReceipt(provider_id="SM42", status="queued")
    (request,) = exchange.requests
    assert request.method == "POST"
    assert request.target == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert twilio.messages_url == "http://twilio.test" + request.target
    assert (
        request.headers["Authorization"]
        == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    )
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Idempotency-Key"] == "m-1"
    assert request.headers["User-Agent"] == f"tidings/{version()}"
    assert parse_qsl(request.content.decode()) == expected_form()


async def test_twilio_without_media_or_callback_sends_only_text_fields() -> None:
    exchange = scripted(created())
    twilio = TwilioSms(SID, TOKEN, "http://twilio.test", None, exchange)
    await twilio.send(OutboundSms(message_id="m-3", to=SMS.to, sender=SMS.sender, body="hi"))
    assert parse_qsl(exchange.requests[0].content.decode()) == [
        ("To", SMS.to),
        ("From", SMS.sender),
        ("Body", "hi"),
    ]


async def test_twilio_media_only_message_has_no_empty_body() -> None:
    exchange = scripted(created())
    twilio = provider(exchange)
    await twilio.send(
        OutboundSms(
            message_id="m", to=SMS.to, sender=SMS.sender, body="", media=("https://x/a.png",)
        )
    )
    assert [k for k, _ in parse_qsl(exchange.requests[0].content.decode())] == [
        "To",
        "From",
        "MediaUrl",
        "StatusCallback",
    ]


async def test_r30_twilio_retries_500_then_records_one_result() -> None:
    exchange = scripted(
        answer(500, b"oops"), refused(503, 20503, "Service unavailable"), created("SM7")
    )
    receipt = await provider(exchange).send(SMS)
    assert receipt.provider_id == "SM7"
    requests = exchange.requests
    assert len(requests) == 3
    # every attempt is the same request, with the same idempotency key
    assert {r.content for r in requests} == {requests[0].content}
    assert {r.headers["Idempotency-Key"] for r in requests} == {"m-1"}


async def test_twilio_retries_429_after_retry_after() -> None:
    exchange = scripted(
        answer(429, {"code": 20429, "message": "Too Many Requests"}, retry_after="0"),
        created("SM8"),
    )
    assert (await provider(exchange).send(SMS)).provider_id == "SM8"
    assert len(exchange.requests) == 2


def listed(*messages: dict[str, str]) -> Answer:
    return answer(200, {"messages": list(messages), "next_page_uri": None})


def timed_out() -> NoAnswer:
    return NoAnswer("no answer within 10 s", timed_out=True)


@pytest.mark.parametrize(
    "error", [NotSent("could not connect within 10 s"), NotSent("connection refused")]
)
async def test_twilio_retries_a_request_that_never_left(error: Exception) -> None:
    exchange = scripted(error, created("SM9"))
    assert (await provider(exchange).send(SMS)).provider_id == "SM9"
    assert [r.method for r in exchange.requests] == ["POST", "POST"]


@pytest.mark.parametrize("error", [timed_out(), NoAnswer("the connection broke")])
async def test_r30_twilio_looks_up_an_unanswered_request_before_posting_again(
    error: Exception,
) -> None:
    other = {"sid": "SM0", "to": SMS.to, "from": SMS.sender, "body": "another text"}
    exchange = scripted(error, listed(other), listed(), created("SM9"))
    assert (await provider(exchange).send(SMS)).provider_id == "SM9"
    requests = exchange.requests
    assert [r.method for r in requests] == ["POST", "GET", "GET", "POST"]
    dated, undated = requests[1], requests[2]
    assert dated.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert dated.params["To"] == SMS.to and dated.params["From"] == SMS.sender
    assert dated.params["DateSent>"]  # DateSent>=YYYY-MM-DD
    assert dated.headers["Authorization"] == requests[0].headers["Authorization"]
    # a message the provider still queues has no date_sent: looked for without the date
    assert "DateSent>" not in undated.params and undated.params["To"] == SMS.to


async def test_r30_twilio_finds_a_message_still_queued_without_a_date_sent() -> None:
    queued = {"sid": "SM5", "to": SMS.to, "from": SMS.sender, "body": SMS.body}
    exchange = scripted(listed(), listed(queued))
    assert await provider(exchange).find(SMS, 0.0) == SmsReceipt("SM5", "queued")


async def test_r30_twilio_takes_the_receipt_it_finds_instead_of_posting_again() -> None:
    ours = {"sid": "SM5", "to": SMS.to, "from": SMS.sender, "body": SMS.body, "status": "sent"}
    exchange = scripted(timed_out(), listed(ours), created("SM9"))
    receipt = await provider(exchange).send(SMS)
    assert receipt == SmsReceipt(provider_id="SM5", status="sent")
    assert [r.method for r in exchange.requests] == ["POST", "GET"]


async def test_r30_twilio_does_not_post_again_when_the_lookup_fails() -> None:
    exchange = scripted(timed_out(), answer(503), created("SM9"))
    with pytest.raises(TwilioError) as info:
        await provider(exchange).send(SMS)
    assert not info.value.permanent and "looked up" in str(info.value)
    assert [r.method for r in exchange.requests] == ["POST", "GET"]


async def test_twilio_find_ignores_messages_created_before_the_attempt() -> None:
    old = {
        "sid": "SM1", "to": SMS.to, "from": SMS.sender, "body": SMS.body,
        "date_created": "Mon, 01 Jan 2024 10:00:00 +0000",
    }  # fmt: skip
    twilio = provider(scripted(listed(old), listed(old), listed(old)))
    after = 1_704_103_200.0 + 3600  # an hour after it was created
    assert await twilio.find(SMS, after) is None
    assert await twilio.find(SMS, after - 3600) == SmsReceipt("SM1", "queued")


async def test_r30_twilio_find_skips_an_identical_text_that_belongs_to_another_message() -> None:
    # an autoresponder sent twice to one number: the first one's sid is not the second's
    first = {"sid": "SM1", "to": SMS.to, "from": SMS.sender, "body": SMS.body,
             "date_created": "Mon, 01 Jan 2024 10:00:00 +0000"}  # fmt: skip
    twilio = provider(scripted(listed(first), listed(first), listed(first), listed(first)))

    async def taken(sid: str) -> bool:
        return sid == "SM1"

    async def free(sid: str) -> bool:
        return False

    assert await twilio.find(SMS, 1_704_103_200.0, taken=taken) is None
    assert await twilio.find(SMS, 1_704_103_200.0, taken=free) == SmsReceipt("SM1", "queued")


async def test_twilio_find_with_an_unreadable_list_is_transient() -> None:
    with pytest.raises(TwilioError) as info:
        await provider(scripted(answer(200, b"<html>"))).find(SMS, 0.0)
    assert not info.value.permanent


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, 21211, "The 'To' number +1555 is not a valid phone number."),
        (400, 21610, "Attempt to send to unsubscribed recipient"),
        (401, 20003, "Authenticate"),
        (404, 20404, "The requested resource was not found"),
    ],
)
async def test_twilio_4xx_is_a_permanent_error_and_never_retried(
    status: int, code: int, message: str
) -> None:
    exchange = scripted(refused(status, code, message), created())
    with pytest.raises(DeliveryError) as info:
        await provider(exchange).send(SMS)
    error = info.value
    assert error.permanent
    assert isinstance(error, TwilioError)
    assert (error.http_status, error.code, error.attempts) == (status, code, 1)
    assert error.error_code == str(code)  # kept on the failed message
    assert str(code) in str(error) and message in str(error)
    assert len(exchange.requests) == 1


async def test_twilio_4xx_without_json_is_still_permanent() -> None:
    with pytest.raises(TwilioError) as info:
        await provider(scripted(answer(400, b"<html>bad</html>"))).send(SMS)
    assert info.value.permanent and info.value.code is None and "bad" in str(info.value)


async def test_twilio_success_without_sid_is_permanent_not_retried() -> None:
    exchange = scripted(answer(201, b"not json"), created())
    with pytest.raises(TwilioError) as info:
        await provider(exchange).send(SMS)
    assert info.value.permanent
    assert len(exchange.requests) == 1


async def test_twilio_gives_up_after_max_attempts_with_a_transient_error() -> None:
    exchange = scripted(*[answer(500) for _ in range(10)])
    with pytest.raises(TwilioError) as info:
        await provider(exchange, max_attempts=4).send(SMS)
    assert not info.value.permanent
    assert (info.value.attempts, info.value.http_status) == (4, 500)
    assert len(exchange.requests) == 4


async def test_twilio_bad_scheme_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match="ftp://twilio.test"):
        TwilioSms(SID, TOKEN, "ftp://twilio.test", None, None, max_attempts=3)


async def test_twilio_backoff_doubles_with_jitter_and_is_capped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = scripted(*[answer(503) for _ in range(6)])
    twilio = TwilioSms(
        SID,
        TOKEN,
        "http://twilio.test",
        None,
        exchange,
        max_attempts=6,
        backoff_initial_s=1.0,
        backoff_max_s=4.0,
        total_timeout_s=1000.0,
        jitter=lambda: 1.0,  # the full step
    )
    with pytest.raises(TwilioError):
        await twilio.send(SMS)
    times = exchange.times
    waits = [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)]
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]


async def test_twilio_jitter_waits_at_least_half_the_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = scripted(*[answer(500) for _ in range(3)])
    twilio = provider(
        exchange,
        max_attempts=3,
        backoff_initial_s=2.0,
        backoff_max_s=10.0,
        jitter=lambda: 0.0,
    )
    with pytest.raises(TwilioError):
        await twilio.send(SMS)
    times = exchange.times
    assert [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)] == [1.0, 2.0]


async def test_twilio_total_time_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    exchange = scripted(*[answer(503) for _ in range(100)])
    twilio = provider(
        exchange,
        max_attempts=100,
        backoff_initial_s=1.0,
        backoff_max_s=8.0,
        total_timeout_s=20.0,
        jitter=lambda: 1.0,
    )
    start = trio.current_time()
    with pytest.raises(TwilioError) as info:
        await twilio.send(SMS)
    assert trio.current_time() - start <= 20.0
    assert not info.value.permanent
    assert len(exchange.requests) == 5  # waits 1 + 2 + 4 + 8 = 15 s; the next 8 s would pass 20 s


async def test_twilio_does_not_close_an_exchange_it_was_given() -> None:
    exchange = scripted(created(), created())
    twilio = TwilioSms(SID, TOKEN, "http://twilio.test", None, exchange)
    await twilio.aclose()
    assert not exchange.closed


# ---------------------------------------------------------------- twilio, real socket


def real_provider(fake: TwilioStandIn, **kwargs: object) -> TwilioSms:
    options: dict[str, object] = {
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.02,
        "request_timeout_s": 2.0,
    }
    options.update(kwargs)
    return TwilioSms(SID, TOKEN, fake.base_url, CALLBACK, None, **options)  # type: ignore[arg-type]


async def test_twilio_over_a_socket_sends_auth_and_fields() -> None:
    async with twilio_stand_in(["ok"]) as fake:
        twilio = real_provider(fake)
        try:
            receipt = await twilio.send(SMS)
        finally:
            await twilio.aclose()
    assert receipt == SmsReceipt(provider_id="SM1", status="queued")
    assert fake.accepted == [expected_form()]


async def test_r30_twilio_over_a_socket_retries_500_and_records_once() -> None:
    async with twilio_stand_in(["500", "500", "ok"]) as fake:
        twilio = real_provider(fake)
        try:
            receipt = await twilio.send(SMS)
        finally:
            await twilio.aclose()
    assert receipt.provider_id == "SM1"
    assert len(fake.accepted) == 1
    assert fake.keys == ["m-1", "m-1", "m-1"]


async def test_twilio_over_a_socket_400_is_permanent() -> None:
    async with twilio_stand_in(["400", "ok"]) as fake:
        twilio = real_provider(fake)
        try:
            with pytest.raises(TwilioError) as info:
                await twilio.send(SMS)
        finally:
            await twilio.aclose()
    assert info.value.permanent and info.value.code == 21211
    assert fake.accepted == [] and len(fake.keys) == 1


async def test_twilio_over_a_socket_wrong_token_is_permanent() -> None:
    async with twilio_stand_in([]) as fake:
        twilio = TwilioSms(SID, "wrong", fake.base_url, None, None, backoff_initial_s=0.01)
        try:
            with pytest.raises(TwilioError) as info:
                await twilio.send(SMS)
        finally:
            await twilio.aclose()
    assert info.value.permanent and info.value.http_status == 401


async def test_twilio_over_a_socket_retries_a_timeout() -> None:
    async with twilio_stand_in(["slow", "ok"]) as fake:
        twilio = real_provider(fake, request_timeout_s=0.2)
        try:
            receipt = await twilio.send(SMS)
        finally:
            await twilio.aclose()
    # R30: the provider took it on the first try; the lookup finds it, nothing is resent
    assert receipt.provider_id == "SM1"
    assert fake.posts == 1 and len(fake.accepted) == 1
    assert [(q["To"], q["From"]) for q in fake.lookups] == [(SMS.to, SMS.sender)]


async def test_twilio_connection_refused_is_transient() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        twilio = TwilioSms(
            SID,
            TOKEN,
            f"http://127.0.0.1:{port}",
            None,
            None,
            max_attempts=3,
            backoff_initial_s=0.001,
            backoff_max_s=0.002,
        )
        try:
            with pytest.raises(TwilioError) as info:
                await twilio.send(SMS)
        finally:
            await twilio.aclose()
    assert not info.value.permanent and info.value.attempts == 3
    assert "connection failed" in str(info.value)
