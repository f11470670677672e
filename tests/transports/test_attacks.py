"""The attack suite of issue 11: each test is one way a hostile visitor, agent client or
webhook caller got in where it did not belong or crashed the server, tried against a
real server on loopback (PROTOCOL.md, "Contract v3 — additions")."""

from __future__ import annotations

import json
from typing import Any

import trio
from tidings.transports.server import Running
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.transports.helpers import AGENT_TOKEN, MANAGER_TOKEN


def ws_url(server: Running, path: str) -> str:
    return server.base_url.replace("http://", "ws://") + path


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def call(ws: WebSocketConnection, rid: int, op: str, **args: Any) -> dict[str, Any]:
    """Send a request; return its reply (skipping event frames)."""
    await ws.send_message(json.dumps({"id": rid, "op": op, **args}))
    while True:
        frame = await recv(ws)
        if frame.get("id") == rid:
            return frame


async def agent(ws: WebSocketConnection, token: str = AGENT_TOKEN) -> None:
    await ws.send_message(json.dumps({"type": "auth", "token": token}))
    assert (await recv(ws))["type"] == "ready"


# -- roles per operation --------------------------------------------------------------------

OUTSIDE = {"notifications": {"new_ticket_email": {"enabled": True, "recipients": ["x@evil.example"]}}}


async def test_support_agent_cannot_redirect_new_ticket_emails(server: Running) -> None:
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await agent(ws)
        reply = await call(ws, 1, "settings.update", settings=OUTSIDE)
        assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
        assert "settings.update" in reply["error"]["detail"]
        # the connection stays open and the settings are unchanged
        settings = (await call(ws, 2, "settings.get"))["result"]
        assert settings["notifications"]["new_ticket_email"]["recipients"] == []


async def test_manager_may_update_settings(server: Running) -> None:
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await agent(ws, MANAGER_TOKEN)
        reply = await call(ws, 1, "settings.update", settings=OUTSIDE)
        assert reply["ok"] is True
        assert reply["result"]["notifications"]["new_ticket_email"]["recipients"] == ["x@evil.example"]
