"""`tidings.client`, the Python client of `/ws/agent`, against a real server: a method per
op, replies matched by id, the contract's errors as typed exceptions, and `subscribe`
going on from the last `seq` after the server went away and came back."""

from __future__ import annotations

import subprocess
import sys
import zoneinfo
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.transports.helpers import AGENT_TOKEN, free_port, make_config, ws_url
from tidings.client import (
    AgentClient,
    AgentError,
    BadRequest,
    Event,
    Forbidden,
    NotFound,
    QuietHours,
    TicketClosed,
    UnknownOp,
    open_agent_client,
)
from tidings.engine.store import open_store
from tidings.transports.server import Running, running_server
from tidings.transports.ws_agent import OPS

PHONE = "+15551230000"


def test_every_op_of_the_server_has_a_client_method() -> None:
    missing = [op for op in OPS if not callable(getattr(AgentClient, op.replace(".", "_"), None))]
    assert missing == []


def _zone_in_quiet_hours() -> str:
    """A fixed-offset zone where it is now outside 08:00-20:00."""
    now = datetime.now(UTC)
    for hours in range(-12, 15):
        name = "Etc/GMT" + (f"{-hours:+d}" if hours else "")
        if not 8 <= now.astimezone(zoneinfo.ZoneInfo(name)).hour < 20:
            return name
    raise AssertionError("every zone is inside quiet hours")


async def test_contract_errors_are_typed_exceptions_carrying_the_code(server: Running) -> None:
    inbox = server.inbox
    zone = _zone_in_quiet_hours()
    await inbox.upsert_profile(
        {"phone": PHONE, "consent": {"transactional": True}, "location": {"timezone": zone}}
    )
    await inbox.receive_sms("SM1", PHONE, "hello")
    ticket = (await inbox.tickets_list()).tickets[0].id
    async with open_agent_client(ws_url(server, "/ws/agent"), AGENT_TOKEN) as agent:
        with pytest.raises(NotFound) as missing:
            await agent.ticket_get("t-missing")
        assert (missing.value.code, isinstance(missing.value, AgentError)) == ("not_found", True)
        with pytest.raises(BadRequest) as bad:
            await agent.tickets_list(limit=500)
        assert bad.value.code == "bad_request" and bad.value.detail.startswith("limit")
        with pytest.raises(QuietHours) as quiet:
            await agent.ticket_reply(ticket, "late")
        assert quiet.value.code == "quiet_hours" and quiet.value.timezone == zone
        hour, minute = (quiet.value.local_time or "").split(":")  # "HH:MM", the customer's
        assert len(hour) == len(minute) == 2 and not 8 <= int(hour) < 20
        with pytest.raises(Forbidden) as forbidden:
            await agent.settings_update({"attribution_window_s": 60})
        assert forbidden.value.code == "forbidden"
        with pytest.raises(UnknownOp):
            await agent.call("tickets.dance")
        await agent.ticket_set_state(ticket, "closed")
        with pytest.raises(TicketClosed):
            await agent.ticket_reply(ticket, "more", send_anyway=True)
        assert await agent.badge_get() == {"unread_profiles": 0}  # the connection stays open


async def test_an_unknown_token_is_refused_with_forbidden(server: Running) -> None:
    with pytest.raises(Forbidden) as refused:
        async with open_agent_client(ws_url(server, "/ws/agent"), "not-a-token"):
            raise AssertionError("connected with an unknown token")
    assert refused.value.code == "forbidden"


async def test_concurrent_calls_each_get_their_own_reply(server: Running) -> None:
    names: dict[str, str] = {}
    async with open_agent_client(ws_url(server, "/ws/agent"), AGENT_TOKEN) as agent:

        async def add(i: int) -> None:
            names[f"r{i}"] = (await agent.quick_replies_add(f"r{i}", f"body {i}"))["body"]

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(add, i)
    assert names == {f"r{i}": f"body {i}" for i in range(20)}


async def test_subscribe_goes_on_from_the_last_seq_after_the_server_comes_back(
    tmp_path: Path,
) -> None:
    config = make_config(**{"server.port": free_port()})
    store = await open_store(f"sqlite:///{tmp_path / 'client.db'}")
    servers: list[Running] = []
    first_down, second_up, done = trio.Event(), trio.Event(), trio.Event()

    async def serve_twice(task_status: trio.TaskStatus[None]) -> None:
        async with running_server(config, store=store) as first:
            servers.append(first)
            task_status.started()
            await first_down.wait()
        async with running_server(config, store=store) as second:  # the same port and store
            servers.append(second)
            second_up.set()
            await done.wait()

    seqs: list[int | None] = []

    async def read_until(events: AsyncGenerator[Event, None], seq: int) -> None:
        with trio.fail_after(20):
            while not seqs or seqs[-1] != seq:
                seqs.append((await anext(events)).seq)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_twice)
            first = servers[0]
            await first.inbox.receive_sms("SM1", PHONE, "one")
            async with open_agent_client(ws_url(first, "/ws/agent"), AGENT_TOKEN) as agent:
                events = agent.subscribe(since=0)
                await read_until(events, first.inbox.last_seq)
                await first.inbox.receive_sms("SM2", PHONE, "two")  # pushed, read or not
                first_down.set()
                await second_up.wait()
                second = servers[1]
                await second.inbox.receive_sms("SM3", PHONE, "three")  # while reconnecting
                last = second.inbox.last_seq
                await read_until(events, last)
                await events.aclose()
            done.set()
    finally:
        await store.aclose()
    assert seqs == list(range(1, last + 1))  # none missed, none twice


def _readme_agent_example() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme.split("An agent client over `/ws/agent`", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_agent_example_replies_and_prints_the_events(server: Running) -> None:
    manager = make_config().agents[2]  # the example's agent may be any inbox role
    await server.inbox.upsert_profile({"phone": PHONE, "consent": {"transactional": True}})
    await server.inbox.receive_sms("SM1", PHONE, "where is my order?")
    code = _readme_agent_example().replace("ws://127.0.0.1:8080", ws_url(server, ""))
    printed = b""
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                [sys.executable, "-c", code, manager.token],
                stdout=subprocess.PIPE,
                check=False,
            )  # fmt: skip
        )
        with trio.fail_after(20):
            while b"message.created" not in printed.split(b"It ships today!", 1)[-1]:
                chunk = await process.stdout.receive_some()
                assert chunk, printed
                printed += chunk
        process.kill()
    lines = printed.decode().splitlines()
    assert "'role': 'manager'" in lines[0]
    assert "It ships today!" in lines[1] and "'author': 'a3'" in lines[1]
    assert lines[2].startswith("1 message.created {'message': {")


async def test_a_connect_cancelled_before_ready_ends_without_waiting_for_the_server() -> None:
    """The block around `open_agent_client` gives up while the server has not yet
    answered `auth`: the client closes the socket and returns (its reader is cancelled
    with it, so a close handshake it waited for with no bound hung it forever — seen in a
    `tidings bench chaos` run whose load ended during an agent's reconnect)."""
    from trio_websocket import WebSocketRequest, serve_websocket

    async def silent(request: WebSocketRequest) -> None:
        await request.accept()
        await trio.sleep_forever()  # never answers auth

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, silent, "127.0.0.1", 0, None))
        url = f"ws://127.0.0.1:{server.port}/ws/agent"
        with trio.fail_after(10):  # hung forever before
            with trio.move_on_after(0.3) as gave_up:
                async with open_agent_client(url, AGENT_TOKEN):
                    raise AssertionError("the silent server said ready")
        assert gave_up.cancelled_caught
        nursery.cancel_scope.cancel()
