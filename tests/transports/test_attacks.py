"""The attack suite of issue 11: each test is one way a hostile visitor, agent client or
webhook caller got in where it did not belong or crashed the server, tried against a
real server on loopback (PROTOCOL.md, "Contract v3 — additions")."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)
from twilio.request_validator import RequestValidator

from tests.transports.helpers import (
    AGENT_TOKEN,
    AUTH_TOKEN,
    MANAGER_TOKEN,
    call,
    make_config,
    recv,
    ws_url,
)
from tests.transports.serve_process import SERVE, child_env, serving
from tidings.client import Forbidden, open_agent_client
from tidings.engine import Batch
from tidings.engine.retention import MARKS
from tidings.engine.store.memory import MemoryStore
from tidings.transports.cli import main
from tidings.transports.config import ConfigError, load_config
from tidings.transports.server import Running, running_server


async def agent(ws: WebSocketConnection, token: str = AGENT_TOKEN) -> None:
    await ws.send_message(json.dumps({"type": "auth", "token": token}))
    assert (await recv(ws))["type"] == "ready"


# -- roles per operation --------------------------------------------------------------------

OUTSIDE = {"notifications": {"new_ticket_email": {"enabled": True, "recipients": ["x@evil.example"]}}}


async def test_support_agent_cannot_redirect_new_ticket_emails(server: Running) -> None:
    async with open_agent_client(ws_url(server, "/ws/agent"), AGENT_TOKEN) as support:
        with pytest.raises(Forbidden) as refused:
            await support.settings_update(OUTSIDE)
        assert "settings.update" in refused.value.detail
        # the connection stays open and the settings are unchanged
        settings = await support.settings_get()
        assert settings["notifications"]["new_ticket_email"]["recipients"] == []


async def test_manager_may_update_settings(server: Running) -> None:
    async with open_agent_client(ws_url(server, "/ws/agent"), MANAGER_TOKEN) as manager:
        settings = await manager.settings_update(OUTSIDE)
        assert settings["notifications"]["new_ticket_email"]["recipients"] == ["x@evil.example"]


# -- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["api-kéy".encode("latin-1"), "ключ".encode(), b"api-key\xff"])
async def test_non_ascii_bearer_key_is_401_not_500(server: Running, key: bytes) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post(
            "/api/events", content=b"{}", headers={"Authorization": b"Bearer " + key}
        )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("token", ["agent-tokén", "ключ", "\ud800"])
async def test_non_ascii_agent_token_is_refused_with_4403(server: Running, token: str) -> None:
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": token}))
        frame = await recv(ws)
        assert frame["type"] == "error" and frame["code"] in ("forbidden", "bad_request")
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
            await ws.get_message()
    assert info.value.reason.code == 4403


async def post_signed(server: Running, path: str, params: list[tuple[str, str]]) -> httpx.Response:
    """POST form `params` signed with the test auth token by Twilio's own validator."""
    url = server.base_url + path
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, dict(params))
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in params)
    async with httpx.AsyncClient() as http:
        return await http.post(
            url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded",
                                        "X-Twilio-Signature": signature},
        )  # fmt: skip


# -- bad values -----------------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000


async def hello(ws: WebSocketConnection, **extra: Any) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "hello", "session": None, **extra}))
    return await recv(ws)


async def still_open(ws: WebSocketConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send `frame` and return the next non-event frame."""
    await ws.send_message(json.dumps(frame))
    while (got := await recv(ws)).get("type") == "event":
        pass
    return got


@pytest.mark.parametrize("depth", [33, 5000])
async def test_deep_json_on_agent_socket_is_bad_request_not_1011(server: Running, depth: int) -> None:
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await agent(ws)
        nested = "[" * (depth - 1) + "]" * (depth - 1)
        await ws.send_message('{"id":1,"op":"quick_replies.add","name":' + nested + "}")
        frame = await recv(ws)
        assert frame["type"] == "error" and frame["code"] == "bad_request"
        assert "nested deeper than 32 levels" in frame["detail"]
        assert (await call(ws, 2, "badge.get"))["ok"] is True


async def test_32_levels_of_json_are_still_decoded(server: Running) -> None:
    nested: Any = {}  # 31 objects inside the frame's own: 32 levels
    for _ in range(30):
        nested = {"k": nested}
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await agent(ws)
        reply = await call(ws, 1, "settings.get", extra=nested)
        assert reply["ok"] is True


async def test_deep_json_on_chat_socket_is_bad_request_not_1011(server: Running) -> None:
    async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
        assert (await hello(ws))["type"] == "ready"
        await ws.send_message('{"type":"message","body":' + DEEP + "}")
        frame = await recv(ws)
        assert frame == {"type": "error", "code": "bad_request", "detail": "frame: nested deeper than 32 levels"}
        assert await still_open(ws, {"type": "ping"}) == {"type": "pong"}


async def test_deep_json_to_api_events_is_400_not_500(server: Running) -> None:
    body = '{"profile":"p1","metric":"Viewed","time":"2024-01-01T00:00:00+00:00","properties":' + DEEP + "}"
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post("/api/events", content=body, headers={"Authorization": "Bearer api-key"})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "bad_request", "detail": "frame: nested deeper than 32 levels"}}


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (r'"Hi\u0000there"', "body: must not contain NUL characters"),
        (r'"Hi\ud800"', "body: must not contain lone surrogates"),
    ],
)
async def test_nul_or_lone_surrogate_in_text_is_bad_request_naming_it(
    server: Running, raw: str, detail: str
) -> None:
    async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
        assert (await hello(ws))["type"] == "ready"
        await ws.send_message('{"type":"message","client_id":"c1","body":' + raw + "}")
        assert await recv(ws) == {"type": "error", "code": "bad_request", "detail": detail}
        assert await still_open(ws, {"type": "ping"}) == {"type": "pong"}
    async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:  # in hello, too
        await ws.send_message('{"type":"hello","visitor":{"name":' + raw + "}}")
        error = await recv(ws)
        reason = detail.partition(": ")[2]
        assert error == {"type": "error", "code": "bad_request", "detail": "visitor.name: " + reason}
        assert (await hello(ws))["type"] == "ready"
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await agent(ws)
        await ws.send_message('{"id":1,"op":"quick_replies.add","name":"n","body":' + raw + "}")
        reply = await recv(ws)
        assert reply == {"id": 1, "ok": False, "error": {"code": "bad_request", "detail": detail}}
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post(
            "/api/messages",
            content='{"profile":"p1","kind":"campaign","source_id":"c","source_name":"C","body":' + raw + "}",
            headers={"Authorization": "Bearer api-key"},
        )
    assert r.status_code == 400 and r.json() == {"error": {"code": "bad_request", "detail": detail}}
    assert await server.inbox.quick_replies_list(None) == []


async def test_nul_in_a_signed_sms_body_is_400(server: Running) -> None:
    params = {"MessageSid": "SMnul", "From": "+15551230000", "To": "+15550001111", "Body": "a\x00b"}
    r = await post_signed(server, "/sms/inbound", list(params.items()))
    assert r.status_code == 400 and r.text == "Body: must not contain NUL characters"
    assert server.inbox.last_seq == 0  # nothing was stored


# -- webhooks -------------------------------------------------------------------------------


async def test_signed_webhook_repeating_body_cannot_smuggle_stop(server: Running) -> None:
    params = [("MessageSid", "SMdup"), ("From", "+15551230000"), ("To", "+15550001111"),
              ("Body", "benign"), ("Body", "STOP")]  # fmt: skip
    r = await post_signed(server, "/sms/inbound", params)
    assert r.status_code == 400
    assert server.inbox.last_seq == 0  # no message, no opt-out


def test_unsigned_webhooks_on_a_public_host_are_a_config_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["serve", "--host", "0.0.0.0", "--port", "0", "--store", "memory://"])
    assert code == 2
    assert capsys.readouterr().err == "config error: sms.auth_token: required when listening on 0.0.0.0\n"
    with pytest.raises(ConfigError, match=r"^sms.auth_token: required when listening on 10.1.2.3$"):
        load_config(None, {"server.host": "10.1.2.3"}, {})
    for host in ("127.0.0.1", "::1", "localhost", "127.8.0.1"):
        assert load_config(None, {"server.host": host}, {}).server.host == host


async def test_allow_unsigned_serves_on_a_public_host_with_a_warning() -> None:
    env = child_env({"TIDINGS_SMS__ALLOW_UNSIGNED": "true"})
    command = [*SERVE, "--host", "0.0.0.0", "--port", "0", "--store", "memory://"]
    async with serving(command, env, stderr=subprocess.PIPE) as served:
        assert served.process.stderr is not None
        with trio.fail_after(10):
            text = (await served.process.stderr.receive_some(65536)).decode()
    warning = json.loads(text.splitlines()[0])
    assert warning["level"] == "warning" and warning["message"].startswith("sms.allow_unsigned:")


# -- limits ---------------------------------------------------------------------------------


async def test_connections_over_the_per_address_limit_get_429_before_the_socket_opens() -> None:
    config = make_config(**{"limits.connections_per_ip": 2})
    async with running_server(config) as server:
        async with open_websocket_url(ws_url(server, "/ws/chat")) as one, open_websocket_url(
            ws_url(server, "/ws/agent")
        ):
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(ws_url(server, "/ws/chat")):
                    pass
            assert info.value.status_code == 429
            assert json.loads(info.value.body) == {
                "error": {"code": "rate_limited", "detail": "too many connections from this address"}
            }
            assert (await hello(one))["type"] == "ready"  # the open ones are untouched
        async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:  # freed again
            await agent(ws)


async def test_new_sessions_over_the_per_address_rate_are_refused_with_4429() -> None:
    config = make_config(**{"limits.new_sessions_per_ip_per_min": 2})
    async with running_server(config) as server:
        sessions = []
        for _ in range(2):
            async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
                sessions.append((await hello(ws))["session"])
        async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
            frame = await hello(ws)
            assert frame == {"type": "error", "code": "rate_limited",
                             "detail": "too many new sessions from this address"}  # fmt: skip
            with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
                await ws.get_message()
        assert info.value.reason.code == 4429
        async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:  # resuming is no new session
            await ws.send_message(json.dumps({"type": "hello", "session": sessions[0]}))
            assert (await recv(ws))["session"] == sessions[0]


async def test_a_trickled_body_is_cut_off_with_408() -> None:
    config = make_config(**{"limits.body_timeout_s": 0.5})
    async with running_server(config) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /sms/inbound HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
            )
            answer = b""
            with trio.fail_after(5):
                for byte in b"From=%2B15551230000&Body=hi":  # one byte every 0.2 s
                    await stream.send_all(bytes([byte]))
                    with trio.move_on_after(0.2):
                        answer += await stream.receive_some(4096)
                    if answer:
                        break
                answer += await stream.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 408")
        assert answer.endswith(b"body: not received within 0.5 s")


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("connections_per_ip", 0, "limits.connections_per_ip: must be 1 or more"),
        ("new_sessions_per_ip_per_min", -1, "limits.new_sessions_per_ip_per_min: must be 1 or more"),
        ("body_timeout_s", 0, "limits.body_timeout_s: must be a number of seconds greater than 0"),
        ("events_kept_days", 0.5, "limits.events_kept_days: must be 1 or more (events are kept 24 h at least)"),
        ("idempotency_kept_days", 6.5, "limits.idempotency_kept_days: must be 7 or more (a MessageSid is kept 7 days at least)"),
        ("connections_per_ip", "many", "limits.connections_per_ip: expected integer, got string"),
    ],
)
def test_limits_are_validated_as_config(key: str, value: Any, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {f"limits.{key}": value}, {})
    assert str(info.value) == error


# -- web chat identity ----------------------------------------------------------------------

CUSTOMER = "customer@shop.example"
SECRET = "identity-secret"


def signed(value: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


async def test_anonymous_hello_with_a_customers_email_does_not_take_over_the_profile(
    server: Running,
) -> None:
    customer = await server.inbox.upsert_profile({"email": CUSTOMER, "name": "Real Customer"})
    async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
        ready = await hello(ws, visitor={"email": CUSTOMER, "name": "Mallory"})
    assert ready["type"] == "ready" and ready["profile"] != customer.id
    own = await server.inbox.profile_get(ready["profile"])
    assert own.verified is False and own.name == "Mallory"
    assert own.email == CUSTOMER  # the claim is kept on the session's own profile
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post("/api/profiles", json={"email": CUSTOMER, "name": "Updated"},
                            headers={"Authorization": "Bearer api-key"})  # fmt: skip
    assert r.status_code == 200 and r.json()["id"] == customer.id
    assert r.json()["verified"] is True
    assert (await server.inbox.profile_get(customer.id)).name == "Updated"
    assert (await server.inbox.profile_get(ready["profile"])).name == "Mallory"
    # a claim never matches profiles: a new e-mail claimed by a visitor, then upserted by
    # the host, makes the host a profile of its own
    async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
        other = await hello(ws, visitor={"email": "new@shop.example"})
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post("/api/profiles", json={"email": "new@shop.example"},
                            headers={"Authorization": "Bearer api-key"})  # fmt: skip
    assert r.status_code == 200 and r.json()["id"] != other["profile"]


async def test_a_signed_identity_joins_the_customers_profile() -> None:
    async with running_server(make_config(**{"chat.identity_secret": SECRET})) as server:
        customer = await server.inbox.upsert_profile({"email": CUSTOMER})
        async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
            ready = await hello(ws, identity={"email": CUSTOMER}, signature=signed(CUSTOMER))
        assert ready["profile"] == customer.id
        async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:  # made if none
            ready = await hello(ws, identity={"phone": "+15551239999"}, signature=signed("+15551239999"))
        made = await server.inbox.profile_get(ready["profile"])
        assert made.phone == "+15551239999" and made.verified is True


@pytest.mark.parametrize("secret", [SECRET, ""])
async def test_a_forged_or_unverifiable_identity_is_forbidden_with_4403(secret: str) -> None:
    async with running_server(make_config(**{"chat.identity_secret": secret})) as server:
        async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
            frame = await hello(ws, identity={"email": CUSTOMER}, signature=signed(CUSTOMER, "guess"))
            assert frame["type"] == "error" and frame["code"] == "forbidden"
            with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
                await ws.get_message()
        assert info.value.reason.code == 4403


async def test_a_chat_socket_from_a_foreign_origin_is_403_before_it_opens() -> None:
    config = make_config(**{"chat.allowed_origins": ["https://shop.acme.example"]})
    async with running_server(config) as server:
        url = ws_url(server, "/ws/chat")
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(url, extra_headers=[("Origin", "https://evil.example")]):
                pass
        assert info.value.status_code == 403
        for origin in ("https://shop.acme.example", server.base_url):
            async with open_websocket_url(url, extra_headers=[("Origin", origin)]) as ws:
                assert (await hello(ws))["type"] == "ready"
        async with open_websocket_url(url) as ws:  # no Origin: not a browser
            assert (await hello(ws))["type"] == "ready"


# -- growth ---------------------------------------------------------------------------------


async def test_typing_events_are_live_only_seq_null_not_replayed(server: Running) -> None:
    """A typing flood reaches the subscribed agent as one `visitor.typing` per 2 s, with
    `"seq": null`; it takes no sequence number and a replay from 0 does not hold it."""
    async with (
        open_websocket_url(ws_url(server, "/ws/agent")) as agent_ws,
        open_websocket_url(ws_url(server, "/ws/chat")) as ws,
    ):
        await agent(agent_ws)
        subscribed = await call(agent_ws, 1, "subscribe", since=0)
        assert subscribed["result"] == {"seq": 0, "oldest": 1}
        ready = await hello(ws)
        for _ in range(20):
            await ws.send_message(json.dumps({"type": "typing"}))
        # a message is asked of the same session actor, so its ack comes after the typings
        ack = await still_open(ws, {"type": "message", "body": "hi", "client_id": "c1"})
        assert ack["type"] == "ack"
        pushed: list[dict[str, Any]] = []
        while not any(e["event"] == "message.created" for e in pushed):
            pushed.append(await recv(agent_ws))
    typing = [e for e in pushed if e["event"] == "visitor.typing"]
    assert typing == [
        {
            "type": "event", "seq": None, "event": "visitor.typing",
            "data": {"session": ready["session"], "profile": ready["profile"], "ticket": None},
        }
    ]  # fmt: skip
    stored = [e["seq"] for e in pushed if e["seq"] is not None]
    assert stored == list(range(1, len(stored) + 1))  # gap-free without it
    assert "visitor.typing" not in [e["event"] for e in await stored_events(server)]


async def test_subscribe_reports_oldest_after_retention_drop() -> None:
    """A store whose first three events were marked eight days ago: the retention
    service drops them at start, `subscribe` says `"oldest": 4`, and a client replaying
    from 0 gets the events from 4 on (it missed 1..3 and reloads)."""
    store = MemoryStore()
    batch = Batch()
    for n in range(3):
        batch.event(json.dumps({"event": "badge", "data": {"unread_profiles": n}}).encode())
    batch.put(MARKS, json.dumps([[time.time() - 8 * 86400, 3]]).encode())
    await store.commit(batch)
    async with running_server(make_config(), store=store) as server:
        for _ in range(500):  # the service sweeps once at start
            if server.inbox.oldest_seq == 4:
                break
            await trio.sleep(0.01)
        async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
            await agent(ws)
            reply = await call(ws, 1, "subscribe", since=0)
            assert reply["result"] == {"seq": server.inbox.last_seq, "oldest": 4}
            batch = Batch()
            batch.event(json.dumps({"event": "badge", "data": {"unread_profiles": 9}}).encode())
            await server.inbox.engine.commit(batch)
            first = await recv(ws)
        assert first == {"type": "event", "seq": 4, "event": "badge", "data": {"unread_profiles": 9}}
        assert [seq for seq, _ in await store.events_since(0, 10)] == [4]  # 1..3 are gone


async def stored_events(server: Running) -> list[dict[str, Any]]:
    """Every event stored so far."""
    out: list[dict[str, Any]] = []
    last = server.inbox.last_seq
    if last:
        async for seq, payload in server.inbox.events(0):
            if seq is None:
                continue  # live only
            out.append(json.loads(payload))
            if seq >= last:
                break
    return out


async def test_server_passes_chat_page_url_and_limits_to_the_inbox() -> None:
    config = make_config(
        **{
            "chat.page_url": "https://shop.acme.example/help",
            "limits.events_kept_days": 2.0,
            "limits.idempotency_kept_days": 9.0,
        }
    )
    async with running_server(config) as server:
        assert server.inbox.account.chat_page() == "https://shop.acme.example/help"
        assert server.inbox.engine.retention.events_kept_s == 2 * 86400
        assert server.inbox.app.idempotency_kept_s == 9 * 86400
    async with running_server(make_config()) as server:  # the defaults
        assert server.inbox.account.chat_page() == server.base_url + "/chat"
        assert server.inbox.engine.retention.events_kept_s == 7 * 86400
        assert server.inbox.app.idempotency_kept_s == 7 * 86400
