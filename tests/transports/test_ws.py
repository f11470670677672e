"""WebSocket endpoints against a real server: agent auth (R29), ops, subscribe/replay,
and the web chat visitor talking to an agent."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.transports.helpers import AGENT_TOKEN, MANAGER_TOKEN, call, make_config, recv, ws_url
from tidings.actors.errors import InboxError
from tidings.client import Event, Forbidden, TicketClosed, open_agent_client
from tidings.transports.server import Running, running_server
from tidings.transports.ws_chat import MessageFrame, PingFrame, _decode
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
    url = ws_url(server, "/ws/agent")
    async with open_agent_client(url, AGENT_TOKEN) as agent:
        page = await agent.tickets_list()
        assert len(page["tickets"]) == 1 and page["cursor"] is None
        ticket = page["tickets"][0]["id"]
        got = await agent.ticket_get(ticket)
        assert got["messages"][0]["body"] == "where is my order?"
        reply = await agent.ticket_reply(ticket, "On its way")
        assert reply["message"]["author"] == "a1"
        assert (await agent.ticket_mark(ticket, read=True))["ticket"]["unread"] is False
        assert (await agent.ticket_assign(ticket, "a1"))["ticket"]["assignee"] == "a1"
        assert [t["id"] for t in (await agent.tickets_list(assignee="me"))["tickets"]] == [ticket]
        assert (await agent.ticket_assign(ticket, None))["ticket"]["assignee"] is None
        note = (await agent.ticket_note(ticket, "Checked with the warehouse"))["message"]
        assert (note["kind"], note["author"], note["status"]) == ("note", "a1", None)
        [found] = (await agent.messages_search("ORDER where"))["results"]
        assert found["message"]["body"] == "where is my order?"
        assert [p["phone"] for p in await agent.profiles_search("+15551230000")] == ["+15551230000"]
        snoozed = await agent.ticket_set_state(ticket, "snoozed", until="tomorrow")
        assert snoozed["ticket"]["state"] == "snoozed" and snoozed["ticket"]["snoozed_until"]
        closed = await agent.ticket_set_state(ticket, "closed")
        assert closed["ticket"]["state"] == "closed"
        with pytest.raises(TicketClosed):
            await agent.ticket_reply(ticket, "more")
        assert (await agent.settings_get())["sms"]["shorten_links"] is True
        with pytest.raises(Forbidden):  # a support agent may not (contract v3)
            await agent.settings_update({"attribution_window_s": 60})
        qr = await agent.quick_replies_add("Hi", "Hello!")
        assert await agent.quick_replies_list("hel") == [qr]
        assert (await agent.quick_replies_update(qr["id"], body="Hey"))["body"] == "Hey"
        assert await agent.quick_replies_delete(qr["id"]) == {"deleted": True}
        profile = got["profile"]["id"]
        assert (await agent.profile_block(profile))["blocked"] is True
        assert (await agent.profile_unblock(profile))["blocked"] is False
        assert (await agent.profile_get(profile))["id"] == profile
        assert await agent.badge_get() == {"unread_profiles": 0}
    async with open_agent_client(url, MANAGER_TOKEN) as manager:
        updated = await manager.settings_update({"attribution_window_s": 60})
        assert updated["attribution_window_s"] == 60


async def _events(events: AsyncIterator[Event], until_seq: int) -> list[Event]:
    out: list[Event] = []
    with trio.fail_after(5):
        while not out or (out[-1].seq or 0) < until_seq:
            out.append(await anext(events))
    return out


async def test_subscribe_replays_then_streams_and_reconnect_misses_nothing(server: Running) -> None:
    inbox = server.inbox
    url = ws_url(server, "/ws/agent")
    await inbox.receive_sms("SM1", "+15551230000", "one")
    async with open_agent_client(url, AGENT_TOKEN) as agent:
        stream = agent.subscribe()
        replayed = await _events(stream, inbox.last_seq)
        await inbox.receive_sms("SM2", "+15551230000", "two")
        events = replayed + await _events(stream, inbox.last_seq)
        assert [e.seq for e in events] == list(range(1, events[-1].seq + 1))
        assert "ticket.created" in {e.event for e in events}
        seen = agent.last_seq
        await stream.aclose()
    # Events while disconnected are replayed from `since`.
    await inbox.receive_sms("SM3", "+15551239999", "three")
    async with open_agent_client(url, AGENT_TOKEN) as agent:
        stream = agent.subscribe(since=seen)
        events = await _events(stream, inbox.last_seq)
        await stream.aclose()
    assert [e.seq for e in events] == list(range(seen + 1, events[-1].seq + 1))
    assert any(
        e.event == "message.created" and e.data["message"]["body"] == "three" for e in events
    )


async def test_chat_hello_message_ack_and_agent_reply_reaches_visitor(server: Running) -> None:
    async with (
        open_agent_client(ws_url(server, "/ws/agent"), AGENT_TOKEN) as agent,
        open_websocket_url(ws_url(server, "/ws/chat")) as chat,
    ):
        stream = agent.subscribe(since=server.inbox.last_seq)
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
        with trio.fail_after(5):
            async for event in stream:
                if event.event == "ticket.created":
                    assert event.data["ticket"]["id"] == ticket
                    break
        await agent.ticket_reply(ticket, "How can I help?")
        while True:
            frame = await recv(chat)
            if frame["type"] == "message":
                assert frame["message"]["body"] == "How can I help?"
                break
        await agent.ticket_set_state(ticket, "closed")
        while True:
            frame = await recv(chat)
            if frame["type"] == "closed":
                assert frame["ticket"] == ticket
                break
        await stream.aclose()


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


def test_chat_frames_decode_alike_whichever_path_they_take() -> None:
    """`_decode` tries one typed decode first; frames it must not judge (escapes, many
    brackets) or refuses take the general path, with the same results and errors."""
    deep = "[" * 40 + "]" * 40
    assert _decode('{"type":"message","body":"caf\\u00e9","client_id":"a"}') == MessageFrame("café", "a")
    assert _decode(json.dumps({"type": "message", "body": deep})) == MessageFrame(deep)
    assert _decode('{"type":"message","body":"a","body":"b"}') == MessageFrame("b")
    assert _decode('{"type":"message","body":"a","type":"ping"}') == PingFrame()
    assert _decode('{"x":[1,{"y":2}],"type":"ping"}') == PingFrame()
    with pytest.raises(InboxError, match="body: must not contain NUL characters"):
        _decode('{"type":"message","body":"a\\u0000"}')
    with pytest.raises(InboxError, match="x: nested deeper than 32 levels"):
        _decode('{"type":"ping","x":' + deep + "}")
