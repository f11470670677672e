"""Bad input never takes the server down, and never stores what it refused.

One server runs for the whole test; hypothesis runs in a worker thread and hands each
example back to the server's trio loop (`trio.from_thread.run`). Each example opens an
agent and a chat connection, throws random frames (JSON, not JSON, not UTF-8; with and
without `auth`/`hello` first) and POSTs random bodies and content types to the webhooks
and `/api/*`. After each example: no 5xx, every error frame well-formed, every agent
request answered exactly once, and the store holds only tickets, profiles, quick replies
and settings that an accepted request explains. Oversized frames and bodies and a flood
are thrown once each at the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url
from twilio.request_validator import RequestValidator

from tests.transports.helpers import AGENT_TOKEN, AUTH_TOKEN, make_config
from tidings.engine.store.memory import MemoryStore
from tidings.transports.server import Running, running_server
from tidings.transports.wire import MAX_FRAME

EXAMPLES = 100
MIN_THROWN = 1_000

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
ops = st.sampled_from([
    "tickets.list", "ticket.get", "ticket.reply", "ticket.set_state", "ticket.mark",
    "profile.get", "profile.block", "profile.unblock", "badge.get", "settings.get",
    "settings.update", "quick_replies.list", "quick_replies.add", "quick_replies.update",
    "quick_replies.delete", "subscribe",
]) | st.text(max_size=15)  # fmt: skip
arg_values = json_values | st.sampled_from(
    ["open", "closed", "snoozed", "later_today", "p1", "t1", ""]
)
settings_partials = st.dictionaries(
    st.sampled_from(
        ["sms", "webchat", "notifications", "attribution_window_s", "quiet_hours", "x"]
    ),
    json_values,
    max_size=3,
)
agent_objects = st.builds(
    lambda i, op, extra: {"id": i, "op": op, **extra},
    st.integers(-(2**70), 2**70) | json_values,
    ops,
    st.dictionaries(
        st.sampled_from(["ticket", "state", "body", "since", "settings", "limit", "cursor",
                         "profile", "name", "quick_reply", "read", "until", "q", "media"]),
        arg_values | settings_partials,
        max_size=4,
    ),
)  # fmt: skip
visitors = st.dictionaries(
    st.sampled_from(["email", "name", "phone", "x"]), json_values, max_size=3
)
chat_objects = st.builds(
    lambda t, extra: {"type": t, **extra},
    st.sampled_from(["message", "message", "message", "typing", "ping", "hello", "x"]) | st.text(max_size=8),
    st.dictionaries(st.sampled_from(["body", "client_id", "session", "visitor"]),
                    json_values | visitors, max_size=3),
)  # fmt: skip
hellos = st.one_of(
    st.just({"type": "hello"}),
    st.just({"type": "hello", "session": None}),
    st.builds(
        lambda s, v: {"type": "hello", "session": s, "visitor": v},
        st.none() | st.text(max_size=30),
        visitors,
    ),
)


def frames_of(objects: st.SearchStrategy[Any], json_weight: int) -> st.SearchStrategy[str | bytes]:
    """A WebSocket frame: a text or binary frame of JSON (`json_weight` times as likely as
    each of the others), of any text, or of any bytes (not UTF-8, mostly)."""
    encoded = objects | json_values
    as_json = st.one_of(
        encoded.map(json.dumps),
        encoded.map(lambda o: json.dumps(o, ensure_ascii=False).encode()),
    )
    return st.one_of(*[as_json] * json_weight, st.text(max_size=60), st.binary(max_size=60))


PATHS = ["/sms/inbound", "/sms/status", "/api/profiles", "/api/events", "/api/orders",
         "/api/messages", "/api/nope"]  # fmt: skip
CONTENT_TYPES = [None, "application/json", "application/x-www-form-urlencoded", "text/plain",
                 "multipart/form-data; boundary=x", "application/octet-stream", "text/xml; charset=latin-1"]  # fmt: skip
api_objects = st.dictionaries(
    st.sampled_from(["id", "phone", "email", "name", "location", "consent", "profile", "metric",
                     "time", "properties", "items", "total", "currency", "kind", "source_id",
                     "source_name", "body", "media", "subscribed", "blocked"]),
    json_values | st.sampled_from(["+15551234567", "a@b.example", "campaign", "flow"]),
)  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=300),
    api_objects.map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda o: json.dumps(o).encode()),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20)).map(
        lambda d: httpx.QueryParams(d).__str__().encode()
    ),
)
requests = st.tuples(
    st.sampled_from(PATHS),
    bodies,
    st.sampled_from(CONTENT_TYPES),
    st.sampled_from([None, "Bearer api-key", "Bearer wrong", "Basic api-key"]),
    st.sampled_from(["none", "random", "signed"]),
)


@dataclass
class Seen:
    """What the server accepted so far (explains what the store may hold), and counts."""

    thrown: int = 0
    tickets: set[str] = field(default_factory=set)
    profiles: set[str] = field(default_factory=set)
    quick_replies: set[str] = field(default_factory=set)
    settings: dict[str, Any] = field(default_factory=dict)
    closes: dict[int, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    acks: int = 0


def _assert_error_frame(reply: dict[str, Any]) -> None:
    if reply.get("type") == "error":
        assert set(reply) == {"type", "code", "detail"}, reply
        assert isinstance(reply["code"], str) and isinstance(reply["detail"], str), reply
    else:
        assert reply.get("ok") is False and "id" in reply, reply
        error = reply["error"]
        assert isinstance(error, dict), reply
        assert isinstance(error.get("code"), str) and isinstance(error.get("detail"), str), reply


def _is_error(reply: dict[str, Any]) -> bool:
    return reply.get("type") == "error" or reply.get("ok") is False


def _closed(seen: Seen, exc: ConnectionClosed) -> None:
    code = exc.reason.code
    assert code in (1000, 1009, 4400, 4403, 4408), exc.reason
    seen.closes[code] = seen.closes.get(code, 0) + 1


async def _agent(
    ws: str, inbox: Any, seen: Seen, auth_first: bool, frames: list[str | bytes]
) -> None:
    sent = 0
    replies: list[dict[str, Any]] = []
    settings_seen: list[dict[str, Any]] = []
    try:
        async with open_websocket_url(ws + "/ws/agent") as conn:
            if auth_first:
                await conn.send_message(json.dumps({"type": "auth", "token": AGENT_TOKEN}))
                assert json.loads(await conn.get_message())["type"] == "ready"
            for frame in frames:
                await conn.send_message(frame)
                sent += 1
                seen.thrown += 1
            # every request gets exactly one reply (events from `subscribe` aside)
            while auth_first and len(replies) < sent:
                reply = json.loads(await conn.get_message())
                if reply.get("type") != "event":
                    replies.append(reply)
            if not auth_first:  # refused: an error frame, then the close
                while True:
                    replies.append(json.loads(await conn.get_message()))
    except ConnectionClosed as exc:
        _closed(seen, exc)
        assert not auth_first or sent == len(frames) and len(replies) == sent, (
            "an authenticated agent was cut off"
        )
    for reply in replies:
        if _is_error(reply):
            seen.errors += 1
            _assert_error_frame(reply)
        elif "result" in reply:
            result = reply["result"]
            if isinstance(result, dict) and set(result) == {"id", "name", "body"}:
                seen.quick_replies.add(result["id"])  # quick_replies.add/update answered ok
            if isinstance(result, dict) and "quiet_hours" in result:
                settings_seen.append(result)  # settings.get/update answered ok
    if settings_seen:  # requests run concurrently: the settings are one of the answers
        current = inbox.settings_get()
        assert current in settings_seen, (current, settings_seen)
        seen.settings = current
    if not auth_first:
        assert len(replies) <= 1 and all(r.get("type") == "error" for r in replies), replies


def _may_be_acked(frame: str | bytes) -> bool:
    try:
        obj = json.loads(frame)
    except ValueError:
        return False
    return (isinstance(obj, dict) and obj.get("type") == "message" and isinstance(obj.get("body"), str)
            and bool(obj["body"].strip()) and isinstance(obj.get("client_id"), str | None))  # fmt: skip


def _looks_like_hello(frame: str | bytes) -> bool:
    try:
        obj = json.loads(frame)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("type") == "hello"


async def _chat(
    ws: str, seen: Seen, hello: dict[str, Any] | None, frames: list[str | bytes]
) -> None:
    end = f"end-{time.monotonic_ns()}"
    eligible = sum(map(_may_be_acked, frames))
    replies: list[dict[str, Any]] = []
    try:
        async with open_websocket_url(ws + "/ws/chat") as conn:
            if hello is not None:
                await conn.send_message(json.dumps(hello))
                seen.thrown += 1
            for frame in frames:
                await conn.send_message(frame)
                seen.thrown += 1
            if hello is not None or _looks_like_hello(frames[0]):
                # frames are handled in order: the ack of this one comes last (if hello worked)
                await conn.send_message(
                    json.dumps({"type": "message", "body": "end", "client_id": end})
                )
            while True:  # a refused first frame: an error, then close 4400
                reply = json.loads(await conn.get_message())
                replies.append(reply)
                if reply.get("type") == "ack" and reply["client_id"] == end:
                    break
    except ConnectionClosed as exc:
        if exc.reason.code == 1006 and not any(r.get("type") == "ready" for r in replies):
            # the server refused the first frames and closed while this client was still
            # writing the rest: the reset can reach the client before the close frame
            seen.closes[1006] = seen.closes.get(1006, 0) + 1
        else:
            _closed(seen, exc)
    # a hello holding a value the server cannot use (NUL, too deep) is refused with
    # bad_request on an open connection (contract v3): a later hello may still succeed
    first = next((i for i, r in enumerate(replies) if r.get("type") == "ready"), None)
    ready = first is not None
    if first is not None:
        assert all(r["code"] == "bad_request" for r in replies[:first]), replies
        seen.profiles.add(replies[first]["profile"])
        replies = replies[first + 1 :]
    acks = [r for r in replies if r.get("type") == "ack"]
    if ready:
        assert len(acks) <= eligible + 1, (acks, frames)
    else:
        assert not acks and all(_is_error(r) for r in replies), (hello, frames, replies)
    for reply in replies:
        assert reply.get("type") in ("ack", "error", "pong", "message", "closed"), reply
        if reply["type"] == "error":
            seen.errors += 1
            _assert_error_frame(reply)
    for ack in acks:
        seen.acks += 1
        message = ack["message"]
        assert message["direction"] == "inbound" and message["body"].strip(), ack
        seen.tickets.add(message["ticket"])


async def _http(
    server: Running, seen: Seen, reqs: list[tuple[str, bytes, str | None, str | None, str]]
) -> None:
    validator = RequestValidator(AUTH_TOKEN)
    async with httpx.AsyncClient(timeout=10) as client:
        for path, body, content_type, authorization, signature in reqs:
            url = server.base_url + path
            headers = {}
            if content_type:
                headers["Content-Type"] = content_type
            if authorization:
                headers["Authorization"] = authorization
            if path.startswith("/sms/") and signature == "signed":
                # signed random parameters without MessageSid or From: refused after the signature
                params = {k: v for k, v in httpx.QueryParams(body.decode("latin-1"))
                          .multi_items() if k not in ("MessageSid", "From")}  # fmt: skip
                body = str(httpx.QueryParams(params)).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                headers["X-Twilio-Signature"] = validator.compute_signature(url, params)
            elif signature == "random":
                headers["X-Twilio-Signature"] = "c2lnbmF0dXJl"
            r = await client.post(url, content=body, headers=headers)
            seen.thrown += 1
            seen.statuses[r.status_code] = seen.statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (path, body, headers, r.status_code, r.text)
            if path.startswith("/sms/"):
                # unsigned or missing MessageSid/From: refused, nothing stored
                assert r.status_code in (400, 403) or (path == "/sms/status" and signature == "signed"), (
                    path, body, headers, r.status_code)  # fmt: skip
                continue
            if r.status_code == 200:
                assert authorization == "Bearer api-key", (path, body, headers)
                data = r.json()
                if path == "/api/profiles":
                    seen.profiles.add(data["id"])
                elif isinstance(data, dict) and isinstance(data.get("profile"), str):
                    seen.profiles.add(data["profile"])
                if path in ("/api/events", "/api/orders"):
                    seen.profiles.add(json.loads(body)["profile"])
            else:
                assert 400 <= r.status_code < 500, r.status_code
                error = r.json()["error"]
                assert isinstance(error["code"], str) and isinstance(error["detail"], str), r.text


async def _check_store(server: Running, store: MemoryStore, seen: Seen) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(server.base_url + "/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
    page = await server.inbox.tickets_list(limit=200)
    tickets = {t.id for t in page.tickets}
    assert tickets == seen.tickets, tickets ^ seen.tickets
    keys = list(store._kv)  # noqa: SLF001 - the test's own store, read after the fact
    profiles = {k.removeprefix("profile:") for k in keys if k.startswith("profile:")}
    # a hello the server accepted made a session, even when the client's connection broke
    # before it read `ready` (a loaded machine): its profile is accepted, not refused
    sessions = {
        json.loads(store._kv[k])["profile"]  # noqa: SLF001
        for k in keys if k.startswith("session:")
    }  # fmt: skip
    assert profiles <= seen.profiles | sessions, profiles - seen.profiles - sessions
    replies = {k.removeprefix("quick_reply:") for k in keys if k.startswith("quick_reply:")}
    assert replies <= seen.quick_replies, replies - seen.quick_replies
    assert server.inbox.settings_get() == seen.settings


def _hypothesis(server: Running, store: MemoryStore, seen: Seen) -> None:
    """Runs in a worker thread; each example runs in the server's trio loop."""
    ws = server.base_url.replace("http://", "ws://")

    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(
        auth_first=st.booleans() | st.just(True),
        agent=st.lists(frames_of(agent_objects, 2), min_size=4, max_size=16),
        hello=st.none() | hellos | hellos | hellos,
        chat=st.lists(frames_of(chat_objects, 80), min_size=2, max_size=12),
        reqs=st.lists(requests, min_size=3, max_size=8),
    )
    def example(auth_first: bool, agent: list[str | bytes], hello: dict[str, Any] | None,
                chat: list[str | bytes], reqs: list[Any]) -> None:  # fmt: skip
        async def run() -> None:
            with trio.fail_after(60):  # a hang guard, not a speed test: loaded CI machines are slow
                await _agent(ws, server.inbox, seen, auth_first, agent)
                await _chat(ws, seen, hello, chat)
                await _http(server, seen, reqs)
                await _check_store(server, store, seen)

        trio.from_thread.run(run)

    example()


async def _oversized(server: Running, seen: Seen) -> None:
    """Frames over 64 KiB close with 1009; a body over 1 MiB is a 4xx. (Floods: test_ws.py.)"""
    ws = server.base_url.replace("http://", "ws://")
    huge = json.dumps({"type": "message", "body": "x" * (MAX_FRAME + 10), "client_id": "huge"})
    for path, opener in (
        ("/ws/chat", {"type": "hello"}),
        ("/ws/agent", {"type": "auth", "token": AGENT_TOKEN}),
    ):
        for frame in (huge, huge.encode()):
            try:
                async with open_websocket_url(ws + path, max_message_size=4 * MAX_FRAME) as conn:
                    await conn.send_message(json.dumps(opener))
                    ready = json.loads(await conn.get_message())
                    assert ready["type"] == "ready"
                    if path == "/ws/chat":
                        seen.profiles.add(ready["profile"])
                    await conn.send_message(frame)
                    while True:
                        await conn.get_message()
            except ConnectionClosed as exc:
                assert exc.reason.code == 1009, exc.reason
    async with httpx.AsyncClient(timeout=10) as client:
        for path in ("/sms/inbound", "/api/profiles"):
            r = await client.post(server.base_url + path, content=b"{" * (1024 * 1024 + 10),
                                  headers={"Authorization": "Bearer api-key"})  # fmt: skip
            assert 400 <= r.status_code < 500, r.status_code


async def test_random_frames_and_bodies_leave_server_healthy_and_store_nothing_refused() -> None:
    store = MemoryStore()
    # every example connects from 127.0.0.1: the per-address limits are test_attacks' part
    unlimited = {"limits.connections_per_ip": 10**6, "limits.new_sessions_per_ip_per_min": 10**6}
    async with running_server(make_config(**unlimited), store=store) as server:
        seen = Seen(settings=server.inbox.settings_get())
        default_settings = seen.settings
        await trio.to_thread.run_sync(partial(_hypothesis, server, store, seen))
        await _oversized(server, seen)
        await _check_store(server, store, seen)
        assert seen.thrown >= MIN_THROWN, seen.thrown
        if seen.settings == default_settings:
            assert server.inbox.settings_get() == default_settings
        print(f"thrown={seen.thrown} errors={seen.errors} acks={seen.acks} tickets={len(seen.tickets)} "
              f"closes={seen.closes} statuses={seen.statuses}")  # fmt: skip
