"""HTTP endpoints against a real server: the SMS webhook (R30), links, `/api/*`, health."""

from __future__ import annotations

import httpx
import pytest
import trio
from twilio.request_validator import RequestValidator

from tests.polling import until
from tests.transports.helpers import AUTH_TOKEN
from tidings.engine import AnswerLost, AskTimeout
from tidings.transports.server import Running


def _signed(url: str, params: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, params)}


async def _post_sms(client: httpx.AsyncClient, base: str, params: dict[str, str]) -> httpx.Response:
    url = f"{base}/sms/inbound"
    return await client.post(url, data=params, headers=_signed(url, params))


async def test_r30_signed_inbound_sms_is_stored_then_answered(server: Running) -> None:
    params = {"MessageSid": "SM1", "From": "+15551230000", "To": "+15550001111", "Body": "hello"}
    async with httpx.AsyncClient() as client:
        r = await _post_sms(client, server.base_url, params)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/xml")
    assert r.text == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    page = await server.inbox.tickets_list()
    assert len(page.tickets) == 1
    view = await server.inbox.ticket_get(page.tickets[0].id)
    assert [m.body for m in view.messages if m.direction == "inbound"] == ["hello"]


async def test_bad_or_missing_signature_is_403(server: Running) -> None:
    params = {"MessageSid": "SM2", "From": "+15551230000", "Body": "x"}
    async with httpx.AsyncClient() as client:
        r1 = await client.post(f"{server.base_url}/sms/inbound", data=params)
        r2 = await client.post(
            f"{server.base_url}/sms/inbound", data=params, headers={"X-Twilio-Signature": "AAAA"}
        )
    assert (r1.status_code, r2.status_code) == (403, 403)
    assert (await server.inbox.tickets_list()).tickets == []


async def test_missing_from_is_400(server: Running) -> None:
    async with httpx.AsyncClient() as client:
        r = await _post_sms(client, server.base_url, {"MessageSid": "SM3", "Body": "x"})
        r2 = await _post_sms(client, server.base_url, {"From": "+15551230000", "Body": "x"})
    assert (r.status_code, r2.status_code) == (400, 400)


async def test_r30_repeated_message_sid_stores_nothing_new(server: Running) -> None:
    params = {"MessageSid": "SM4", "From": "+15551230001", "Body": "once"}
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await _post_sms(client, server.base_url, params)).status_code == 200
    page = await server.inbox.tickets_list()
    view = await server.inbox.ticket_get(page.tickets[0].id)
    assert [m.body for m in view.messages if m.direction == "inbound"] == ["once"]


async def test_status_callback_unknown_sid_is_200(server: Running) -> None:
    params = {"MessageSid": "SMnope", "MessageStatus": "delivered"}
    url = f"{server.base_url}/sms/status"
    async with httpx.AsyncClient() as client:
        r = await client.post(url, data=params, headers=_signed(url, params))
    assert r.status_code == 200 and r.content == b""


async def test_unknown_short_link_is_404(server: Running) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{server.base_url}/l/nothing")
    assert r.status_code == 404


async def test_api_needs_bearer_key(server: Running) -> None:
    async with httpx.AsyncClient() as client:
        r1 = await client.post(f"{server.base_url}/api/profiles", json={"phone": "+15551239999"})
        r2 = await client.post(
            f"{server.base_url}/api/profiles",
            json={"phone": "+15551239999"},
            headers={"Authorization": "Bearer wrong"},
        )
    assert (r1.status_code, r2.status_code) == (401, 401)
    assert r1.json()["error"]["code"] == "unauthorized"


async def test_api_profile_event_order_and_errors(server: Running) -> None:
    auth = {"Authorization": "Bearer api-key"}
    base = server.base_url
    async with httpx.AsyncClient(headers=auth) as client:
        r = await client.post(f"{base}/api/profiles", json={"phone": "+15551239999", "name": "Kim"})
        assert r.status_code == 200, r.text
        profile = r.json()["id"]
        r = await client.post(
            f"{base}/api/events",
            json={
                "profile": profile,
                "metric": "Viewed",
                "time": "2026-01-01T00:00:00.000000+00:00",
                "properties": {},
            },
        )
        assert r.json() == {"ok": True}
        r = await client.post(
            f"{base}/api/orders",
            json={
                "profile": profile,
                "id": "o1",
                "items": [{"name": "Hat", "quantity": 1, "price": 5.0}],
                "total": 5.0,
                "currency": "USD",
                "time": "2026-01-01T00:00:00.000000+00:00",
            },
        )
        assert r.json() == {"ok": True}
        r = await client.post(
            f"{base}/api/events",
            json={"profile": "nobody", "metric": "m", "time": "2026-01-01T00:00:00+00:00"},
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await client.post(f"{base}/api/events", json={"profile": profile})
        assert r.status_code == 400 and r.json()["error"]["detail"].startswith("metric")
        r = await client.post(
            f"{base}/api/messages",
            json={
                "profile": profile,
                "kind": "campaign",
                "source_id": "c1",
                "source_name": "Sale",
                "body": "hi",
            },
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_subscribed"
        r = await client.post(f"{base}/api/profiles", content=b"{not json")
        assert r.status_code == 400


async def test_health_metrics_pages(server: Running) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{server.base_url}/healthz")).json() == {"status": "ok"}
        metrics = (await client.get(f"{server.base_url}/metrics")).text
        for name in (
            "tidings_messages_in_total",
            "tidings_messages_out_total",
            "tidings_active_actors",
            "tidings_mailbox_depth",
            "tidings_timers_pending",
            "tidings_dead_letters_total",
        ):
            assert f"\n{name} " in metrics
        for path in ("/", "/chat", "/static/console.js", "/static/widget.css"):
            assert (await client.get(server.base_url + path)).status_code == 200, path
        assert (await client.get(f"{server.base_url}/static/nope.js")).status_code == 404


async def test_api_answers_503_json_when_an_ask_fails_not_500(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def timing_out(*args: object, **kwargs: object) -> None:
        raise AskTimeout(("profile", "1"), 10.0)

    monkeypatch.setattr(server.inbox, "upsert_profile", timing_out)
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{server.base_url}/api/profiles",
            json={"phone": "+15551239999"},
            headers={"Authorization": "Bearer api-key"},
        )
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable"
    assert "AskTimeout" in r.json()["error"]["detail"]


async def test_sms_webhook_answers_503_when_the_sms_could_not_be_stored_not_500(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(*args: object, **kwargs: object) -> None:
        raise AnswerLost("the node that handled it stopped before answering")

    monkeypatch.setattr(server.inbox, "receive_sms", lost)
    async with httpx.AsyncClient() as client:
        params = {"MessageSid": "SM503", "From": "+15551239999", "Body": "hi"}
        r = await _post_sms(client, server.base_url, params)
    assert r.status_code == 503, r.text  # not acknowledged: the provider sends it again


async def test_an_endpoint_that_crashes_is_logged_with_its_traceback(
    server: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def crashing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the inbox")

    monkeypatch.setattr(server.inbox, "receive_sms", crashing)
    async with httpx.AsyncClient() as client:
        params = {"MessageSid": "SM500", "From": "+15551239999", "Body": "hi"}
        r = await _post_sms(client, server.base_url, params)
    assert r.status_code == 500

    async def logged() -> bool:  # the server logs it once the 500 has gone out
        await trio.lowlevel.checkpoint()
        return any(
            rec.name == "hypercorn.error" and "a bug in the inbox" in str((rec.exc_info or ())[1:2])
            for rec in caplog.records
        )

    await until(logged, "the crash in hypercorn's error log", seconds=5)
