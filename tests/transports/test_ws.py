"""WebSocket endpoints against a real server: agent auth (R29), ops, subscribe/replay,
and the web chat visitor talking to an agent."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.transports.helpers import AGENT_TOKEN, call, make_config, recv, ws_url
from tidings.transports.server import Running, running_server
from tidings.transports.ws_common import BURST, RATE


async def auth(ws: WebSocketConnection, token: str = AGENT_TOKEN) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "auth", "token": token}))
    return await recv(ws)


async def test_agent_auth_ready(server: Running) -> None:
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        assert await auth(ws) == {
            "type": "ready",
            "agent": {"id": "a1", "name": "Sam", "role": "support"},
        }


@pytest.mark.parametrize("token", ["analyst-token", "unknown"])
async def test_r29_forbidden_role_or_token_closes_4403(server: Running, token: str) -> None:
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        frame = await auth(ws, token)
        assert frame["type"] == "error" and frame["code"] == "forbidden"
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
            await ws.get_message()
    assert info.value.reason.code == 4403


async def test_agent_bad_frames_keep_connection(server: Running) -> None:
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await auth(ws)
        await ws.send_message("not json")
        assert (await recv(ws))["code"] == "bad_frame"
        await ws.send_message(json.dumps({"op": "badge.get"}))
        assert (await recv(ws))["code"] == "bad_frame"
        await ws.send_message(json.dumps({"id": "1", "op": "badge.get"}))
        assert (await recv(ws))["code"] == "bad_frame"
        reply = await call(ws, 1, "nope")
        assert reply["ok"] is False and reply["error"]["code"] == "unknown_op"
        reply = await call(ws, 2, "ticket.get")
        assert reply["error"]["code"] == "bad_request" and reply["error"]["detail"].startswith(
            "ticket"
        )
        reply = await call(ws, 3, "ticket.get", ticket="t-missing")
        assert reply["error"]["code"] == "not_found"
        reply = await call(ws, 4, "badge.get")
        assert reply == {"id": 4, "ok": True, "result": {"unread_profiles": 0}}


async def test_agent_ops_list_reply_settings_quick_replies(server: Running) -> None:
    inbox = server.inbox
    await inbox.upsert_profile({"phone": "+15551230000", "consent": {"transactional": True}})
    await inbox.receive_sms("SM1", "+15551230000", "where is my order?")
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await auth(ws)
        page = (await call(ws, 1, "tickets.list"))["result"]
        assert len(page["tickets"]) == 1 and page["cursor"] is None
        ticket = page["tickets"][0]["id"]
        got = (await call(ws, 2, "ticket.get", ticket=ticket))["result"]
        assert got["messages"][0]["body"] == "where is my order?"
        reply = await call(ws, 3, "ticket.reply", ticket=ticket, body="On its way")
        assert reply["ok"], reply
        assert reply["result"]["message"]["author"] == "a1"
        marked = await call(ws, 4, "ticket.mark", ticket=ticket, read=True)
        assert marked["result"]["ticket"]["unread"] is False
        closed = await call(ws, 5, "ticket.set_state", ticket=ticket, state="closed")
        assert closed["result"]["ticket"]["state"] == "closed"
        again = await call(ws, 6, "ticket.reply", ticket=ticket, body="more")
        assert again["error"]["code"] == "ticket_closed"
        settings = (await call(ws, 7, "settings.get"))["result"]
        assert settings["sms"]["shorten_links"] is True
        upd = await call(ws, 8, "settings.update", settings={"attribution_window_s": 60})
        assert upd["error"]["code"] == "forbidden"  # a support agent may not (contract v3)
        qr = (await call(ws, 9, "quick_replies.add", name="Hi", body="Hello!"))["result"]
        assert (await call(ws, 10, "quick_replies.list", q="hel"))["result"] == [qr]
        up = await call(ws, 11, "quick_replies.update", quick_reply=qr["id"], body="Hey")
        assert up["result"]["body"] == "Hey"
        deleted = await call(ws, 12, "quick_replies.delete", quick_reply=qr["id"])
        assert deleted["result"] == {"deleted": True}
        profile = got["profile"]["id"]
        blocked = await call(ws, 13, "profile.block", profile=profile)
        assert blocked["result"]["blocked"] is True
        unblocked = await call(ws, 14, "profile.unblock", profile=profile)
        assert unblocked["result"]["blocked"] is False
        assert (await call(ws, 15, "profile.get", profile=profile))["result"]["id"] == profile


async def _events(ws: WebSocketConnection, until_seq: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while not out or out[-1]["seq"] < until_seq:
        frame = await recv(ws)
        if frame.get("type") == "event":
            out.append(frame)
    return out


async def test_subscribe_replays_then_streams_and_reconnect_misses_nothing(server: Running) -> None:
    inbox = server.inbox
    await inbox.receive_sms("SM1", "+15551230000", "one")
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await auth(ws)
        reply = await call(ws, 1, "subscribe")
        first_last = reply["result"]["seq"]
        assert first_last >= 1
        await inbox.receive_sms("SM2", "+15551230000", "two")
        events = await _events(ws, inbox.last_seq)
        assert [e["seq"] for e in events] == list(range(1, events[-1]["seq"] + 1))
        assert "ticket.created" in {e["event"] for e in events}
        seen = events[-1]["seq"]
    # Events while disconnected are replayed from `since`.
    await inbox.receive_sms("SM3", "+15551239999", "three")
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await auth(ws)
        await ws.send_message(json.dumps({"id": 1, "op": "subscribe", "since": seen}))
        events = await _events(ws, inbox.last_seq)
        assert [e["seq"] for e in events] == list(range(seen + 1, events[-1]["seq"] + 1))
        assert any(
            e["event"] == "message.created" and e["data"]["message"]["body"] == "three"
            for e in events
        )


async def test_chat_hello_message_ack_and_agent_reply_reaches_visitor(server: Running) -> None:
    async with (
        open_websocket_url(ws_url(server, "/ws/agent")) as agent,
        open_websocket_url(ws_url(server, "/ws/chat")) as chat,
    ):
        await auth(agent)
        since = server.inbox.last_seq
        await call(agent, 1, "subscribe", since=since)
        await chat.send_message(
            json.dumps({"type": "hello", "session": None, "visitor": {"email": "v@example.com"}})
        )
        ready = await recv(chat)
        assert ready["type"] == "ready" and len(ready["session"]) >= 22 and ready["ticket"] is None
        await chat.send_message(json.dumps({"type": "ping"}))
        assert await recv(chat) == {"type": "pong"}
        await chat.send_message(json.dumps({"type": "message", "body": "help", "client_id": "c1"}))
        ack = await recv(chat)
        while ack["type"] != "ack":
            ack = await recv(chat)
        assert ack["client_id"] == "c1" and ack["message"]["body"] == "help"
        ticket = ack["message"]["ticket"]
        while True:
            frame = await recv(agent)
            if frame.get("event") == "ticket.created":
                assert frame["data"]["ticket"]["id"] == ticket
                break
        reply = await call(agent, 2, "ticket.reply", ticket=ticket, body="How can I help?")
        assert reply["ok"], reply
        while True:
            frame = await recv(chat)
            if frame["type"] == "message":
                assert frame["message"]["body"] == "How can I help?"
                break
        await call(agent, 3, "ticket.set_state", ticket=ticket, state="closed")
        while True:
            frame = await recv(chat)
            if frame["type"] == "closed":
                assert frame["ticket"] == ticket
                break


async def test_chat_bad_frames(server: Running) -> None:
    async with open_websocket_url(ws_url(server, "/ws/chat")) as chat:
        await chat.send_message(json.dumps({"type": "ping"}))
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
            while True:
                await chat.get_message()
    assert info.value.reason.code == 4400
    async with open_websocket_url(ws_url(server, "/ws/chat")) as chat:
        await chat.send_message(json.dumps({"type": "hello"}))
        assert (await recv(chat))["type"] == "ready"
        await chat.send_message(json.dumps({"type": "message"}))
        assert (await recv(chat))["type"] == "error"
        await chat.send_message(json.dumps({"type": "dance"}))
        assert (await recv(chat))["type"] == "error"
        await chat.send_message(json.dumps({"type": "ping"}))
        assert await recv(chat) == {"type": "pong"}
        await chat.send_message("{oops")
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
            while True:
                await chat.get_message()
    assert info.value.reason.code == 4400


async def test_oversized_frame_closes_1009(server: Running) -> None:
    async with open_websocket_url(ws_url(server, "/ws/chat"), max_message_size=1 << 20) as chat:
        await chat.send_message(json.dumps({"type": "hello"}))
        await recv(chat)
        await chat.send_message(json.dumps({"type": "message", "body": "x" * 70_000}))
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
            while True:
                await chat.get_message()
    assert info.value.reason.code == 1009


@pytest.mark.parametrize(
    ("path", "opener"),
    [("/ws/chat", {"type": "hello"}), ("/ws/agent", {"type": "auth", "token": AGENT_TOKEN})],
)
async def test_rate_limit_answers_rate_limited_until_tokens_come_back(
    mock_clock: trio.testing.MockClock, path: str, opener: dict[str, str]
) -> None:
    # The clock stands still (rate 0), so the bucket refills only when the test jumps it.
    async with running_server(make_config()) as server:
        async with open_websocket_url(ws_url(server, path)) as ws:
            await ws.send_message(json.dumps(opener))
            assert (await recv(ws))["type"] == "ready"
            ping = {"type": "ping"} if path == "/ws/chat" else {"id": 1, "op": "badge.get"}
            for _ in range(150):
                await ws.send_message(json.dumps(ping))
            codes = Counter([(await recv(ws)).get("code", "answered") for _ in range(150)])
            assert codes == {"answered": BURST, "rate_limited": 150 - BURST}
            mock_clock.jump(1 / RATE)  # one token back
            await ws.send_message(json.dumps(ping))
            assert "code" not in await recv(ws)
            await ws.send_message(json.dumps(ping))
            assert (await recv(ws))["code"] == "rate_limited"
