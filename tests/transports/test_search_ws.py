"""`messages.search` and `profiles.search` over `/ws/agent` (contract v3, "Team workflow"),
on the embedded SQLite store: the exact shapes, and hostile queries answered with
results or `bad_request` naming the argument, never `internal` or a closed connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from trio_websocket import open_websocket_url

from tests.transports.helpers import AGENT_TOKEN, call, make_config, recv, ws_url
from tidings.transports.server import Running, running_server

PHONE = "+15551230000"


@pytest.fixture
async def sqlite_server(tmp_path: Path) -> AsyncIterator[Running]:
    store = f"sqlite:///{tmp_path / 'tidings.db'}"
    async with running_server(make_config(**{"server.store": store})) as running:
        yield running


async def test_search_ops_answer_the_contract_shapes(sqlite_server: Running) -> None:
    inbox = sqlite_server.inbox
    profile = await inbox.upsert_profile({"phone": PHONE, "name": "Zoë Müller", "email": "zoe@example.de"})
    stored = await inbox.receive_sms("SM1", PHONE, "Wo ist meine Bestellung 1001? Grüße")
    async with open_websocket_url(ws_url(sqlite_server, "/ws/agent")) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": AGENT_TOKEN}))
        assert (await recv(ws))["type"] == "ready"
        found = await call(ws, 1, "messages.search", q="grusse BESTELLUNG")
        assert found["ok"] is True
        assert found["result"]["cursor"] is None
        [result] = found["result"]["results"]
        assert set(result) == {"message", "profile"}
        assert result["message"]["id"] == stored.id and result["message"]["body"] == stored.body
        assert result["profile"] == {"id": profile.id, "name": "Zoë Müller", "phone": PHONE,
                                     "email": "zoe@example.de"}  # fmt: skip
        profiles = await call(ws, 2, "profiles.search", q="ZOE")
        assert [p["id"] for p in profiles["result"]] == [profile.id]
        assert profiles["result"][0]["verified"] is True and "consent" in profiles["result"][0]


@pytest.mark.parametrize(
    "q", ['"', "*", "NEAR(", "NEAR(bestellung 1001)", "bestellung OR a", "^1001", "1001*", "-a"]
)
async def test_hostile_queries_are_plain_words(sqlite_server: Running, q: str) -> None:
    await sqlite_server.inbox.receive_sms("SM1", PHONE, "near bestellung 1001 or a")
    async with open_websocket_url(ws_url(sqlite_server, "/ws/agent")) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": AGENT_TOKEN}))
        await recv(ws)
        for rid, op in enumerate(("messages.search", "profiles.search")):
            reply = await call(ws, rid, op, q=q)
            if q in ('"', "*"):  # no word at all
                assert reply["error"] == {"code": "bad_request",
                                          "detail": "q: must contain a word (letters or digits)"}
            elif op == "messages.search":  # every word of q is in the message
                assert len(reply["result"]["results"]) == 1, reply
            else:
                assert reply["result"] == []


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ({"q": "a\x00b"}, "q"),
        ({"q": "x" * 10_000}, "q"),
        ({"q": "x " * 5_000}, "q"),
        ({}, "q"),
        ({"q": 5}, "q"),
        ({"q": "order", "limit": "5"}, "limit"),
        ({"q": "order", "limit": 500}, "limit"),
        ({"q": "order", "cursor": "1e999|m"}, "cursor"),
        ({"q": "order", "cursor": 3}, "cursor"),
    ],
)
async def test_bad_search_arguments_are_bad_request_naming_them(
    sqlite_server: Running, args: dict[str, object], argument: str
) -> None:
    async with open_websocket_url(ws_url(sqlite_server, "/ws/agent")) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": AGENT_TOKEN}))
        await recv(ws)
        for rid, op in enumerate(("messages.search", "profiles.search")):
            if op == "profiles.search" and argument != "q":
                continue
            reply = await call(ws, rid, op, **args)
            assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
            assert reply["error"]["detail"].startswith(f"{argument}: "), reply
