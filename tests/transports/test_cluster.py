"""Three `tidings serve` nodes on one redis-server (issue 12): webhooks and agents spread
over all three; one node killed with SIGKILL, or stopped with SIGSTOP past its lease and
then continued. Every SMS answered 200 is stored exactly once, each phone has one
profile and one SMS ticket (R02), every agent sees every event once and in order, and a
paused node's late writes are refused (fenced)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url
from twilio.request_validator import RequestValidator

from tests.transports.serve_process import ROOT, SERVE, child_env
from tests.transports.test_webhooks import Receiver, receiving, until
from tidings.actors import thread
from tidings.actors.model import Message
from tidings.bench.chaos import Provider
from tidings.client import AgentClient, AgentError, Disconnected, ReplyTimeout, open_agent_client
from tidings.engine.store.redis import RedisStore

TOKEN = "cluster-token"
AGENT = "cluster-agent"
LEASE = 1.5
PHONES = [f"+1555200{i:04d}" for i in range(20)]
CONFIG = f"""
[sms]
sender = "+15550001111"
auth_token = "{TOKEN}"
{{sms}}

[[agents]]
id = "a1"
name = "Sam"
role = "support"
token = "{AGENT}"

[cluster]
shards = 32
lease = {LEASE}
"""


@dataclass
class Node:
    """One `tidings serve` child process."""

    name: str
    process: trio.Process
    base: str = ""
    events: list[int] = field(default_factory=list)

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(self.base + "/metrics")).text
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found, name
        return float(found.group(1))


async def _console(proc: trio.Process) -> str:
    assert proc.stdout is not None
    buffer = b""
    with trio.fail_after(30):
        while b"console: " not in buffer or b"\n" not in buffer.split(b"console: ")[1]:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, "the node exited early"
            buffer += chunk
    return buffer.split(b"console: ")[1].split(b"\n")[0].decode().rstrip("/")


@asynccontextmanager
async def cluster(
    tmp_path: Path, redis_url: str, n: int = 3, extra: str = "",
    via: dict[int, str] | None = None, sms: str = "",
) -> AsyncIterator[list[Node]]:  # fmt: skip
    """`n` nodes on `redis_url` (node `i` on `via[i]` instead when given) configured with
    `CONFIG` (`sms` added to its `[sms]` table) + `extra`, started one after another;
    stopped (SIGTERM, or SIGKILL if one does not stop) when the block ends."""
    config = tmp_path / "cluster.toml"
    config.write_text(CONFIG.format(sms=sms) + extra)
    nodes: list[Node] = []
    async with trio.open_nursery() as nursery:
        for i in range(n):
            store = (via or {}).get(i, redis_url)
            cmd = [*SERVE, "--config", str(config), "--port", "0", "--store", store,
                   "--node", f"n{i}"]  # fmt: skip
            log = (tmp_path / f"n{i}.log").open("wb")  # kept for a failing test's report
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process, cmd, stdout=subprocess.PIPE, stderr=log,
                    cwd=str(ROOT), env=child_env(), check=False,
                )
            )  # fmt: skip
            node = Node(f"n{i}", proc)
            nodes.append(node)
            node.base = await _console(proc)
        try:
            yield nodes
        finally:
            for node in nodes:
                if node.process.returncode is None:
                    node.process.send_signal(signal.SIGCONT)
                    node.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                for node in nodes:
                    await node.process.wait()
            for node in nodes:
                if node.process.returncode is None:
                    node.process.kill()


async def _agent(node: Node, ready: trio.Event) -> None:
    """An agent on `node`: every event seq it receives, in arrival order."""
    url = node.base.replace("http://", "ws://") + "/ws/agent"
    async with open_websocket_url(url) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": AGENT}))
        await _frame(ws)
        await ws.send_message(json.dumps({"id": 1, "op": "subscribe", "since": 0}))
        ready.set()
        while True:
            frame = await _frame(ws)
            if frame.get("type") == "event":
                node.events.append(frame["seq"])


async def _frame(ws: WebSocketConnection) -> dict[str, Any]:
    return json.loads(await ws.get_message())  # type: ignore[no-any-return]


def _post(
    answered: list[str], failed: dict[str, str] | None = None, phones: list[str] = PHONES
) -> Callable[..., Any]:
    """A poster of SMS number `i` (from `phones[i % len(phones)]`) to a node; the bodies
    answered 200 go to `answered`, the others (with what went wrong) to `failed`."""
    validator = RequestValidator(TOKEN)

    async def post(client: httpx.AsyncClient, node: Node, i: int) -> None:
        url = node.base + "/sms/inbound"
        params = {"MessageSid": f"SM{i:05d}", "From": phones[i % len(phones)], "Body": f"m{i}"}
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        try:
            r = await client.post(url, data=params, headers=headers)
        except httpx.HTTPError as exc:
            if failed is not None:
                failed[params["Body"]] = f"{node.name}: {exc!r}"
            return
        if r.status_code == 200:
            answered.append(params["Body"])
        elif failed is not None:
            failed[params["Body"]] = f"{node.name}: {r.status_code} {r.text}"

    return post


async def _check_store(
    redis_url: str, answered: list[str], phones: list[str] = PHONES
) -> list[Message]:
    """Each answered SMS stored once; one profile and one SMS ticket per phone (R02).
    The outbound SMS stored."""
    async with RedisStore(redis_url) as store:
        mapped = await store.get_many([f"phone:{p}" for p in phones])
        profiles = {m.decode() for m in mapped if m is not None}
        assert len(profiles) == len(phones)
        stored = await store._live().keys(store._base + "kv:profile:*")
        assert len(stored) == len(phones)
        tickets = await store.index_query("tickets", frozenset({"channel=sms"}), 1000)
        assert len(tickets) == len(phones)
        bodies: list[str] = []
        outbound: list[Message] = []
        for profile in profiles:
            messages = await thread.last_messages(
                store, thread.stream("sms", profile, None), 10_000
            )
            bodies += [m.body for m in messages if m.direction == "inbound"]
            outbound += [m for m in messages if m.direction == "outbound"]
    for body in answered:
        assert bodies.count(body) == 1, body
    return outbound


async def _outbox_drained(redis_url: str) -> None:
    """Wait until every outbound job (R20 autoresponses) was sent by some node."""
    async with RedisStore(redis_url) as store:
        with trio.fail_after(20):
            while True:
                if await store.index_count("outbox", frozenset()) == 0:
                    return
                await trio.sleep(0.1)


async def _settle(nodes: list[Node], redis_url: str) -> int:
    """Wait until every live agent has every event in the store; the last seq."""
    async with RedisStore(redis_url) as store:
        with trio.fail_after(20):
            while True:
                last = await store.last_event_seq()
                if all(n.events and n.events[-1] >= last for n in nodes):
                    return last
                await trio.sleep(0.1)


def _assert_every_event_once_in_order(nodes: list[Node], last: int) -> None:
    for node in nodes:
        # every event from 1 on, once and in order (later ones may have come meanwhile)
        wrong = [(i, seq) for i, seq in enumerate(node.events, 1) if seq != i]
        assert not wrong and len(node.events) >= last, (node.name, wrong[:5], len(node.events))


async def test_three_nodes_keep_one_profile_and_ticket_per_phone_and_every_event_everywhere(
    tmp_path: Path, redis_url: str
) -> None:
    answered: list[str] = []
    failed: dict[str, str] = {}
    hooks = Receiver()
    async with receiving(hooks), AsyncExitStack() as stack:
        extra = f'\n[[webhooks]]\nurl = "{hooks.url}"\nsecret = "{hooks.secret}"\n'
        nodes = await stack.enter_async_context(cluster(tmp_path, redis_url, extra=extra))
        agents = await stack.enter_async_context(trio.open_nursery())
        for node in nodes:
            ready = trio.Event()
            agents.start_soon(_agent, node, ready)
            await ready.wait()
        async with httpx.AsyncClient(timeout=15) as client:
            await _spread(client, nodes, _post(answered, failed), gap=0.002)
        assert not failed
        assert len(answered) == 200
        last = await _settle(nodes, redis_url)
        _assert_every_event_once_in_order(nodes, last)
        # webhooks are delivered by one node, not once per node: one delivery per event
        await until(lambda: set(hooks.delivered()) >= set(range(1, last + 1)), timeout=60)
        ids: dict[int, set[str]] = {}
        for arrival in hooks.arrivals:
            ids.setdefault(arrival.body["seq"], set()).add(arrival.delivery)
        twice = {seq: d for seq, d in ids.items() if len(d) > 1}
        assert not twice, twice
        assert sum([await n.metric("tidings_forwarded_messages_total") for n in nodes]) > 0
        agents.cancel_scope.cancel()
    await _check_store(redis_url, answered)


async def test_a_killed_node_loses_no_answered_message_and_its_shards_move(
    tmp_path: Path, redis_url: str
) -> None:
    answered: list[str] = []
    failed: dict[str, str] = {}
    async with cluster(tmp_path, redis_url) as nodes, trio.open_nursery() as agents:
        for node in nodes[:2]:
            ready = trio.Event()
            agents.start_soon(_agent, node, ready)
            await ready.wait()
        async with httpx.AsyncClient(timeout=15) as client:
            await _spread(client, nodes, _post(answered, failed), at={101: nodes[2].process.kill})
        # the live nodes answer everything; the killed one what it answered before
        assert not [f for f in failed.values() if not f.startswith("n2")]
        assert len(answered) >= 130  # two thirds of 200, less those in flight at the kill
        with trio.fail_after(LEASE * 3 + 5):  # the killed node's shards are served again
            while True:
                if sum([await n.metric("tidings_shards_owned") for n in nodes[:2]]) == 32:
                    break
                await trio.sleep(0.1)
        last = await _settle(nodes[:2], redis_url)
        _assert_every_event_once_in_order(nodes[:2], last)
        await _outbox_drained(redis_url)  # the killed node's autoresponses were sent too
        agents.cancel_scope.cancel()
    await _check_store(redis_url, answered)


async def test_a_killed_nodes_outbound_sms_are_sent_once_by_the_nodes_that_take_its_shards(
    tmp_path: Path, redis_url: str
) -> None:
    """200 new phones each get an R20 autoresponse through a stand-in of Twilio's REST
    API that answers after 0-30 ms and counts every POST; one node is killed with
    SIGKILL mid-load, so some of its sends are in doubt. The nodes that take its shards
    send its jobs; every autoresponse is POSTed exactly once."""
    phones = [f"+1555300{i:04d}" for i in range(200)]
    answered: list[str] = []
    failed: dict[str, str] = {}
    provider = Provider()
    async with trio.open_nursery() as stand_in:
        port = await stand_in.start(provider.run)
        sms = (
            f'provider = "twilio"\naccount_sid = "ACcluster"\nbase_url = "http://127.0.0.1:{port}"'
        )
        async with cluster(tmp_path, redis_url, sms=sms) as nodes:
            post = _post(answered, failed, phones)
            async with httpx.AsyncClient(timeout=15) as client:
                await _spread(client, nodes, post, at={121: nodes[2].process.kill})
                assert not [f for f in failed.values() if not f.startswith("n2")]
                for body in list(failed):  # the provider retries what was not answered
                    await post(client, nodes[0], int(body[1:]))
            await _outbox_drained(redis_url)
        stand_in.cancel_scope.cancel()
    assert len(answered) == 200
    outbound = await _check_store(redis_url, answered, phones)
    assert len(outbound) >= len(answered)  # one autoresponse per new ticket (R20)
    twice = {key: n for key, n in provider.posts.items() if n > 1}
    assert not twice, twice
    unsent = [m.id for m in outbound if provider.posts[m.id] != 1]
    assert not unsent, unsent


async def _spread(
    client: httpx.AsyncClient, nodes: list[Node], post: Callable[..., Any], gap: float = 0.004,
    at: dict[int, Callable[[], object]] | None = None,
    then: Callable[[], Awaitable[None]] | None = None, sms: range = range(200),
) -> None:  # fmt: skip
    """Post SMS `sms` (0..199) round-robin over `nodes`, `gap` seconds apart; call
    `at[i]()` just before SMS `i`, and await `then()` once all are on their way; return
    when all are answered."""
    async with trio.open_nursery() as senders:
        for i in sms:
            if at and i in at:
                at[i]()
            senders.start_soon(post, client, nodes[i % 3], i)
            await trio.sleep(gap)
        if then is not None:
            await then()


async def _heal_later(heal: Callable[[], None]) -> None:
    """`heal()` 2.5 leases from now: whatever was cut stayed cut past a lease."""
    await trio.sleep(LEASE * 2.5)
    heal()


async def test_a_node_paused_past_its_lease_gives_its_shards_up_and_loses_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    answered: list[str] = []
    failed: dict[str, str] = {}
    async with cluster(tmp_path, redis_url) as nodes:
        paused = nodes[1]
        async with httpx.AsyncClient(timeout=20) as client:
            await _spread(
                client, nodes, _post(answered, failed),
                at={100: lambda: paused.process.send_signal(signal.SIGSTOP)},
                then=partial(_heal_later, lambda: paused.process.send_signal(signal.SIGCONT)),
            )  # fmt: skip
        # the live nodes answer everything; the paused one answers once it runs again,
        # but may drop a kept-alive connection it found idle when it woke up (a client
        # retries those, as an SMS provider does)
        assert not [f for f in failed.values() if not f.startswith(paused.name)]
        assert len(answered) >= 190
        # on waking, the node learns that its shards were taken: from its next renewal,
        # or from a write refused because it carried the old epoch (which comes first
        # is a race; a write that was on the wire at the pause is the partition test's)
        taken = await paused.metric("tidings_leases_lost_total")
        fenced = await paused.metric("tidings_fenced_writes_refused_total")
        assert taken + fenced > 0
    await _check_store(redis_url, answered)


class Partition:
    """A TCP relay to `port` that can be cut: while cut it holds every byte it reads,
    both ways, and delivers them when healed, as a network partition that heals does."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._open = trio.Event()
        self._open.set()

    def cut(self) -> None:
        self._open = trio.Event()

    def heal(self) -> None:
        self._open.set()

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, near: trio.SocketStream) -> None:
        async with near, await trio.open_tcp_stream("127.0.0.1", self.port) as far:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, near, far, nursery.cancel_scope)
                await self._pump(far, near, nursery.cancel_scope)

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, both: trio.CancelScope
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                await self._open.wait()
                await dst.send_all(data)
        except trio.BrokenResourceError:
            pass
        both.cancel()


async def test_a_node_cut_off_past_its_lease_is_fenced_and_writes_nothing_late(
    tmp_path: Path, redis_url: str
) -> None:
    """Node n1 reaches Redis through a relay that is cut for 2.5 leases while SMS keep
    coming and an agent on n1 marks every SMS ticket read. The marks of the tickets on
    n1's own shards are committed at once (an active ticket reads nothing first), so
    their writes are on the wire during the cut and reach Redis after other nodes took
    those shards: the commit script refuses every one of them."""
    answered: list[str] = []
    failed: dict[str, str] = {}
    partition = Partition(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    async with trio.open_nursery() as relay:
        port = await relay.start(partition.serve)
        via = {1: f"redis://127.0.0.1:{port}"}
        async with cluster(tmp_path, redis_url, via=via) as nodes:
            cut_off = nodes[1]
            post = _post(answered, failed)
            url = cut_off.base.replace("http://", "ws://") + "/ws/agent"
            async with (
                open_agent_client(url, AGENT) as agent,
                httpx.AsyncClient(timeout=30) as client,
            ):
                await _spread(client, nodes, post, sms=range(100))
                tickets = [t["id"] for t in (await agent.tickets_list(limit=100))["tickets"]]
                assert len(tickets) == len(PHONES)
                partition.cut()
                async with trio.open_nursery() as marks:
                    for ticket in tickets:
                        marks.start_soon(_mark_read, agent, ticket)
                    then = partial(_heal_later, partition.heal)
                    await _spread(client, nodes, post, sms=range(100, 200), then=then)
            assert not [f for f in failed.values() if not f.startswith(cut_off.name)]
            assert len(answered) >= 190
            fenced = await cut_off.metric("tidings_fenced_writes_refused_total")
            assert fenced > 0
        relay.cancel_scope.cancel()
    await _check_store(redis_url, answered)


async def _mark_read(agent: AgentClient, ticket: str) -> None:
    """Mark `ticket` read; whatever the answer (it may come from the shard's new owner,
    or not before the cut heals), it is not what the test looks at."""
    with trio.move_on_after(LEASE * 6):
        try:
            await agent.ticket_mark(ticket, True)
        except (AgentError, Disconnected, ReplyTimeout):
            pass


async def _chat_call(ws: WebSocketConnection, frame: dict[str, Any], kind: str) -> dict[str, Any]:
    """Send `frame`; the first frame of type `kind` that comes back."""
    await ws.send_message(json.dumps(frame))
    with trio.fail_after(15):
        while True:
            answer = await _frame(ws)
            if answer.get("type") == kind:
                return answer


async def test_visitors_on_every_node_get_agent_replies_sent_from_other_nodes(
    tmp_path: Path, redis_url: str
) -> None:
    async with cluster(tmp_path, redis_url) as nodes:
        visitors: list[tuple[WebSocketConnection, str]] = []
        async with AsyncExitStack() as stack:
            for i, node in enumerate(nodes * 2):  # two visitors on each node
                url = node.base.replace("http://", "ws://") + "/ws/chat"
                chat = await stack.enter_async_context(open_websocket_url(url))
                hello = {"type": "hello", "session": None, "visitor": {"email": f"v{i}@x.example"}}
                await _chat_call(chat, hello, "ready")
                message = {"type": "message", "body": f"help {i}", "client_id": "c1"}
                ack = await _chat_call(chat, message, "ack")
                visitors.append((chat, ack["message"]["ticket"]))
            for i, (chat, ticket) in enumerate(visitors):
                agent_node = nodes[(i + 1) % 3]  # never the visitor's own node
                url = agent_node.base.replace("http://", "ws://") + "/ws/agent"
                async with open_websocket_url(url) as agent:
                    await agent.send_message(json.dumps({"type": "auth", "token": AGENT}))
                    await _frame(agent)
                    op = {"id": 1, "op": "ticket.reply", "ticket": ticket, "body": f"reply {i}"}
                    await agent.send_message(json.dumps(op))
                    with trio.fail_after(15):
                        while (answer := await _frame(agent)).get("id") != 1:
                            pass
                    assert answer["ok"], answer
                frame = await _chat_call(chat, {"type": "ping"}, "message")
                assert frame["message"]["body"] == f"reply {i}"
