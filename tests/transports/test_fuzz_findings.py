"""What the hostile-input fuzz (`tidings bench fuzz`, `test_fuzz.py`) found, one test per
finding, each against a real server on loopback (contract v3, "Limits and bad input":
a value the server cannot use is `bad_request` naming the argument, never a crash, a
`500` or a closed connection)."""

from __future__ import annotations

import json

import httpx
import pytest
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.transports.helpers import AGENT_TOKEN, call, recv, ws_url
from tidings.transports.server import Running

# An argument *name* with a lone surrogate: the refusal names it, and a lone surrogate
# cannot be encoded as JSON, so the refusal itself used to fail (1011, 500).
SURROGATE_KEY = '"\\ud800"'


async def test_lone_surrogate_in_an_argument_name_is_bad_request_not_1011_on_agent_socket(
    server: Running,
) -> None:
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": AGENT_TOKEN}))
        assert (await recv(ws))["type"] == "ready"
        await ws.send_message('{"id":1,"op":"quick_replies.list",' + SURROGATE_KEY + ":1}")
        reply = await recv(ws)
        assert reply["id"] == 1 and reply["ok"] is False
        assert reply["error"] == {"code": "bad_request", "detail": "\\ud800: must not contain lone surrogates"}
        assert (await call(ws, 2, "badge.get"))["ok"] is True  # the connection stays open


async def test_lone_surrogate_in_a_field_name_is_bad_request_not_1011_on_chat_socket(
    server: Running,
) -> None:
    async with open_websocket_url(ws_url(server, "/ws/chat")) as ws:
        await ws.send_message('{"type":"hello","visitor":{' + SURROGATE_KEY + ':"x"}}')
        reply = await recv(ws)
        assert reply == {"type": "error", "code": "bad_request",
                         "detail": "visitor.\\ud800: must not contain lone surrogates"}  # fmt: skip
        await ws.send_message(json.dumps({"type": "hello"}))  # the connection stays open
        assert (await recv(ws))["type"] == "ready"


async def test_lone_surrogate_in_a_property_name_is_400_not_500_on_api_events(server: Running) -> None:
    body = ('{"profile":"p1","metric":"Viewed","time":"2024-01-01T00:00:00+00:00",'
            '"properties":{' + SURROGATE_KEY + ":1}}")  # fmt: skip
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post("/api/events", content=body, headers={"Authorization": "Bearer api-key"})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "bad_request",
                                  "detail": "properties.\\ud800: must not contain lone surrogates"}}  # fmt: skip


async def test_profile_field_of_the_wrong_type_is_bad_request_naming_the_field(server: Running) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post("/api/profiles", json={"email": [1, 2]}, headers={"Authorization": "Bearer api-key"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"
    assert r.json()["error"]["detail"].startswith("email: ")


async def test_bad_text_in_a_body_that_is_a_list_is_refused_naming_its_place_in_the_frame(
    server: Running,
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post("/api/orders", content='[{"a":"x\\u0000"}]', headers={"Authorization": "Bearer api-key"})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "bad_request", "detail": "frame[0].a: must not contain NUL characters"}}


async def test_lone_surrogate_in_a_key_of_the_auth_frame_is_refused_with_4403_not_1011(
    server: Running,
) -> None:
    # msgspec cannot match such a key against the `Auth` struct: it raised, uncaught
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await ws.send_message('{"type":"auth","token":"t",' + SURROGATE_KEY + ":true}")
        assert await recv(ws) == {"type": "error", "code": "forbidden", "detail": "unknown token"}
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 4403
