"""Contract v3, *Team workflow*, over `/ws/agent` against a real server: `ticket.assign`,
the `assignee` filter of `tickets.list` ("me", "none", an agent id), `ticket.note` and
`Ticket.last_message`, with the contract's exact shapes and errors; and the SMS sender by
Messaging Service (issue 14 item 6) against the Twilio stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.transports.helpers import (
    AGENT_TOKEN,
    MANAGER_TOKEN,
    POOL_NUMBER,
    TWILIO_SID,
    TWILIO_TOKEN,
    call,
    make_config,
    recv,
    twilio_stand_in,
    ws_url,
)
from tidings.actors.outbound import OutboundSms
from tidings.transports.config import ConfigError, load_config
from tidings.transports.server import Running, running_server
from tidings.transports.sms_providers import TwilioSms

PHONE = "+15551230000"
SERVICE = "MG" + "0123456789abcdef" * 2
TICKET_KEYS = {
    "id", "profile", "channel", "state", "unread", "snoozed_until", "created_at",
    "last_activity_at", "first_response_s", "visitor_online", "followup", "assignee",
    "last_message",
}  # fmt: skip


@asynccontextmanager
async def agent(server: Running, token: str = AGENT_TOKEN) -> AsyncIterator[WebSocketConnection]:
    """An agent's connection, signed in."""
    async with open_websocket_url(ws_url(server, "/ws/agent")) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": token}))
        assert (await recv(ws))["type"] == "ready"
        yield ws


async def sms_ticket(server: Running, phone: str = PHONE, sid: str = "SM1") -> str:
    inbox = server.inbox
    await inbox.upsert_profile({"phone": phone, "consent": {"transactional": True}})
    ticket = (await inbox.receive_sms(sid, phone, "Where is my order #1001?")).ticket
    assert ticket
    return ticket


async def ok(ws: WebSocketConnection, rid: int, op: str, **args: Any) -> Any:
    reply = await call(ws, rid, op, **args)
    assert reply["ok"] is True, reply
    return reply["result"]


async def error(ws: WebSocketConnection, rid: int, op: str, **args: Any) -> dict[str, Any]:
    reply = await call(ws, rid, op, **args)
    assert reply["ok"] is False, reply
    return reply["error"]  # type: ignore[no-any-return]


async def test_ticket_shape_has_assignee_and_last_message(server: Running) -> None:
    ticket = await sms_ticket(server)
    async with agent(server) as ws:
        got = (await ok(ws, 1, "ticket.get", ticket=ticket))["ticket"]
        assert set(got) == TICKET_KEYS
        assert got["assignee"] is None
        assert set(got["last_message"]) == {"body", "direction", "kind", "created_at"}
        listed = (await ok(ws, 2, "tickets.list"))["tickets"][0]
        assert listed["last_message"] == got["last_message"]


async def test_ticket_assign_me_none_and_agent_filters(server: Running) -> None:
    mine, theirs, free = [await sms_ticket(server, f"+1555123000{i}", f"SM{i}") for i in range(3)]
    async with agent(server) as ws:  # a1
        assigned = await ok(ws, 1, "ticket.assign", ticket=mine, agent="a1")
        assert set(assigned) == {"ticket"} and assigned["ticket"]["assignee"] == "a1"
        await ok(ws, 2, "ticket.assign", ticket=theirs, agent="a3")
        ids = lambda result: [t["id"] for t in result["tickets"]]  # noqa: E731
        assert ids(await ok(ws, 3, "tickets.list", assignee="me")) == [mine]
        assert ids(await ok(ws, 4, "tickets.list", assignee="a3")) == [theirs]
        assert ids(await ok(ws, 5, "tickets.list", assignee="none")) == [free]
        assert ids(await ok(ws, 6, "tickets.list", assignee="a2")) == []
        unassigned = await ok(ws, 7, "ticket.assign", ticket=theirs, agent=None)
        assert unassigned["ticket"]["assignee"] is None
        assert ids(await ok(ws, 8, "tickets.list", assignee="none")) == [free, theirs]
    async with agent(server, MANAGER_TOKEN) as manager:  # a3: "me" is whoever asks
        await ok(manager, 1, "ticket.assign", ticket=free, agent="a3")
        found = await ok(manager, 2, "tickets.list", assignee="me")
        assert [t["id"] for t in found["tickets"]] == [free]


async def test_ticket_assign_pushes_ticket_updated(server: Running) -> None:
    ticket = await sms_ticket(server)
    async with agent(server) as ws:
        await ok(ws, 1, "subscribe", since=server.inbox.last_seq)
        await ws.send_message(
            json.dumps({"id": 2, "op": "ticket.assign", "ticket": ticket, "agent": "a1"})
        )
        frames = [await recv(ws), await recv(ws)]
        [event] = [f for f in frames if f.get("type") == "event"]
        assert event["event"] == "ticket.updated"
        assert (
            event["data"]["ticket"]["id"] == ticket and event["data"]["ticket"]["assignee"] == "a1"
        )


async def test_ticket_assign_errors(server: Running) -> None:
    ticket = await sms_ticket(server)
    async with agent(server) as ws:
        assert (await error(ws, 1, "ticket.assign", ticket="t-nope", agent="a1"))[
            "code"
        ] == "not_found"
        assert (await error(ws, 2, "ticket.assign", ticket="t-nope", agent="ghost"))[
            "code"
        ] == "not_found"
        unknown = await error(ws, 3, "ticket.assign", ticket=ticket, agent="ghost")
        assert unknown["code"] == "not_found" and "ghost" in unknown["detail"]
        missing = await error(ws, 4, "ticket.assign", ticket=ticket)
        assert missing["code"] == "bad_request" and missing["detail"].startswith("agent")
        wrong = await error(ws, 5, "ticket.assign", ticket=ticket, agent=7)
        assert wrong["code"] == "bad_request" and wrong["detail"].startswith("agent")
        bad_filter = await error(ws, 6, "tickets.list", assignee=3)
        assert bad_filter["code"] == "bad_request" and bad_filter["detail"].startswith("assignee")
        empty = await error(ws, 7, "tickets.list", assignee="")
        assert empty["code"] == "bad_request" and empty["detail"].startswith("assignee")


async def test_ticket_note_shape_and_errors(server: Running) -> None:
    ticket = await sms_ticket(server)
    async with agent(server) as ws:
        await trio.sleep(0.5)  # the autoresponse is handed over
        sent = len(server.sms.sent)
        result = await ok(ws, 1, "ticket.note", ticket=ticket, body="VIP customer")
        assert set(result) == {"message"}
        note = result["message"]
        assert (note["kind"], note["direction"], note["author"], note["status"]) == (
            "note", "outbound", "a1", None,
        )  # fmt: skip
        assert note["ticket"] == ticket and note["body"] == "VIP customer"
        await ok(ws, 2, "ticket.set_state", ticket=ticket, state="closed")
        await ok(ws, 3, "ticket.note", ticket=ticket, body="closed after refund")
        thread = (await ok(ws, 4, "ticket.get", ticket=ticket))["messages"]
        assert [m["kind"] for m in thread][-2:] == ["note", "note"]
        assert (await error(ws, 5, "ticket.note", ticket="t-nope", body="x"))["code"] == "not_found"
        for rid, args in enumerate(({}, {"body": ""}, {"body": 5}), start=6):
            refused = await error(ws, rid, "ticket.note", ticket=ticket, **args)
            assert refused["code"] == "bad_request" and refused["detail"].startswith("body")
        await trio.sleep(0.5)
        assert len(server.sms.sent) == sent  # never sent by SMS


async def test_a_note_is_never_pushed_to_the_chat_widget(server: Running) -> None:
    async with open_websocket_url(ws_url(server, "/ws/chat")) as chat:
        await chat.send_message(json.dumps({"type": "hello", "session": None, "visitor": {}}))
        ready = await recv(chat)
        await chat.send_message(json.dumps({"type": "message", "body": "hi", "client_id": "c1"}))
        ticket = (await recv(chat))["message"]["ticket"]
        async with agent(server) as ws:
            await ok(ws, 1, "ticket.note", ticket=ticket, body="PRIVATE note")
            await ok(ws, 2, "ticket.reply", ticket=ticket, body="Hello!")
        pushed = await recv(chat)
        assert pushed["type"] == "message" and pushed["message"]["body"] == "Hello!"
    async with open_websocket_url(ws_url(server, "/ws/chat")) as again:
        await again.send_message(json.dumps({"type": "hello", "session": ready["session"]}))
        resumed = await recv(again)
        assert [m["body"] for m in resumed["messages"]] == ["hi", "Hello!"]


async def test_every_inbox_role_may_assign_and_note(server: Running) -> None:
    ticket = await sms_ticket(server)
    for token in (AGENT_TOKEN, MANAGER_TOKEN):  # support, manager
        async with agent(server, token) as ws:
            await ok(ws, 1, "ticket.assign", ticket=ticket, agent="a1")
            await ok(ws, 2, "ticket.note", ticket=ticket, body="seen")


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("agent_id", ["me", "none"])
def test_the_assignee_filter_words_are_not_agent_ids(agent_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, {"TIDINGS_AGENTS": json.dumps([{"id": agent_id, "token": "t"}])})
    assert str(info.value).startswith("TIDINGS_AGENTS[0].id: ")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tidings.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "sid",
    ["MG123", "mg" + "0" * 32, "MG" + "g" * 32, "PN" + "0" * 32, SERVICE + "0", SERVICE + "\n"],
)
def test_a_malformed_messaging_service_sid_is_a_config_error(tmp_path: Path, sid: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"[sms]\nmessaging_service_sid = {json.dumps(sid)}\n"), {})
    assert str(info.value).startswith("sms.messaging_service_sid: ")


def test_twilio_needs_a_sender_or_a_messaging_service(tmp_path: Path) -> None:
    twilio = '[sms]\nprovider = "twilio"\naccount_sid = "AC1"\nauth_token = "x"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, twilio), {})
    assert str(info.value).startswith("sms.sender: ") and "messaging_service_sid" in str(info.value)
    config = load_config(write(tmp_path, twilio + f'messaging_service_sid = "{SERVICE}"\n'), {})
    assert config.sms.messaging_service_sid == SERVICE and config.sms.sender == ""


# -- the Messaging Service against the Twilio stand-in ---------------------------------------


async def test_messaging_service_sid_is_sent_instead_of_from() -> None:
    async with twilio_stand_in(["ok"]) as fake:
        config = make_config(**{
            "sms.provider": "twilio", "sms.account_sid": TWILIO_SID,
            "sms.auth_token": TWILIO_TOKEN, "sms.base_url": fake.base_url, "sms.sender": "",
            "sms.messaging_service_sid": SERVICE,
        })  # fmt: skip
        async with running_server(config) as server, httpx.AsyncClient() as client:
            headers = {"Authorization": "Bearer api-key"}
            profile = await client.post(
                f"{server.base_url}/api/profiles", headers=headers,
                json={"phone": PHONE, "consent": {"marketing": True, "transactional": True}},
            )  # fmt: skip
            sent = await client.post(
                f"{server.base_url}/api/messages", headers=headers,
                json={"profile": profile.json()["id"], "kind": "campaign", "source_id": "c1",
                      "source_name": "Sale", "body": "20% off today"},
            )  # fmt: skip
            assert sent.status_code == 200, sent.text
            with trio.fail_after(5):
                while fake.posts < 1:  # noqa: ASYNC110 (the stand-in only counts)
                    await trio.sleep(0.05)
            await trio.sleep(0.3)
    assert fake.posts == 1
    [form] = fake.accepted
    fields = dict(form)
    assert fields["MessagingServiceSid"] == SERVICE and "From" not in fields
    assert (fields["To"], fields["Body"]) == (PHONE, "20% off today")


async def test_an_in_doubt_service_message_is_found_by_its_service_not_resent() -> None:
    sms = OutboundSms(message_id="m-1", to=PHONE, sender="", body="Your code is 1234")
    async with twilio_stand_in(["slow", "ok"]) as fake:
        twilio = TwilioSms(
            TWILIO_SID, TWILIO_TOKEN, fake.base_url, None, None,
            request_timeout_s=0.2, backoff_initial_s=0.01, messaging_service_sid=SERVICE,
        )  # fmt: skip
        try:
            receipt = await twilio.send(sms)
        finally:
            await twilio.aclose()
    assert receipt.provider_id == "SM1"
    assert fake.posts == 1  # R30: looked up, not posted again
    assert fake.messages[0]["from"] == POOL_NUMBER
    assert all("From" not in q and q["To"] == PHONE for q in fake.lookups)


BAD_VALUES: list[Any] = [
    None,
    1,
    -1.5,
    True,
    [],
    {},
    ["a1"],
    {"id": "a1"},
    "",
    "a\x00",
    "\ud800",
]


async def test_team_ops_answer_bad_input_with_bad_request_naming_the_argument(
    server: Running,
) -> None:
    ticket = await sms_ticket(server)
    cases = [
        ("ticket.assign", {"ticket": ticket, "agent": "a1"}, "agent"),
        ("ticket.assign", {"ticket": ticket, "agent": "a1"}, "ticket"),
        ("ticket.note", {"ticket": ticket, "body": "hi"}, "body"),
        ("ticket.note", {"ticket": ticket, "body": "hi"}, "ticket"),
        ("tickets.list", {}, "assignee"),
    ]
    async with agent(server) as ws:
        rid = 0
        for op, good, argument in cases:
            for value in BAD_VALUES:
                if argument == "agent" and value is None:
                    continue  # null unassigns
                if argument == "assignee" and value is None:
                    continue  # null is "no filter"
                rid += 1
                frame = json.dumps({"id": rid, "op": op, **good, argument: value})
                await ws.send_message(frame)
                while (reply := await recv(ws)).get("id") != rid:
                    pass
                where = f"{op} {argument}={value!r}: {reply}"
                assert reply["ok"] is False, where
                code, detail = reply["error"]["code"], reply["error"]["detail"]
                if code == "not_found":  # a string that names no ticket or agent
                    assert isinstance(value, str) and argument in ("ticket", "agent"), where
                else:
                    assert code == "bad_request" and detail.startswith(argument), where
