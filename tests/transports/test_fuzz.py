"""Random frames and bodies never take the server down: /healthz still answers."""

from __future__ import annotations

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.transports.conftest import AGENT_TOKEN, make_config
from transports.server import running_server

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
ops = st.sampled_from(["tickets.list", "ticket.get", "ticket.reply", "ticket.set_state",
                       "subscribe", "settings.update", "quick_replies.add", "profile.get", "x"])
agent_frames = st.one_of(
    st.text(max_size=50),
    st.builds(lambda i, op, extra: {"id": i, "op": op, **extra}, json_values, ops,
              st.dictionaries(st.sampled_from(["ticket", "state", "body", "since", "settings",
                                               "limit", "cursor", "profile"]), json_values)),
)
chat_frames = st.one_of(
    st.builds(lambda t, extra: {"type": t, **extra},
              st.sampled_from(["message", "typing", "ping", "hello", "x"]),
              st.dictionaries(st.sampled_from(["body", "client_id", "session"]), json_values)),
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(agent=st.lists(agent_frames, max_size=8), chat=st.lists(chat_frames, max_size=8),
       body=st.binary(max_size=200))
def test_random_frames_and_bodies_leave_server_healthy(
    agent: list[object], chat: list[object], body: bytes
) -> None:
    import json

    async def run() -> None:
        async with running_server(make_config()) as server:
            ws = server.base_url.replace("http://", "ws://")
            with trio.fail_after(10):
                async with open_websocket_url(ws + "/ws/agent") as conn:
                    await conn.send_message(json.dumps({"type": "auth", "token": AGENT_TOKEN}))
                    await conn.get_message()
                    for frame in agent:
                        await conn.send_message(frame if isinstance(frame, str) else json.dumps(frame))
                    await trio.sleep(0.05)
                try:
                    async with open_websocket_url(ws + "/ws/chat") as conn:
                        await conn.send_message(json.dumps({"type": "hello"}))
                        for frame in chat:
                            await conn.send_message(json.dumps(frame))
                        await trio.sleep(0.05)
                except ConnectionClosed:
                    pass
                async with httpx.AsyncClient() as client:
                    for path in ("/sms/inbound", "/sms/status", "/api/profiles", "/api/messages"):
                        await client.post(server.base_url + path, content=body,
                                          headers={"Authorization": "Bearer api-key"})
                    r = await client.get(server.base_url + "/healthz")
                    assert r.json() == {"status": "ok"}

    trio.run(run)
