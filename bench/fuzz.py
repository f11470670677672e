"""Scenario ``fuzz``: hostile input against one real ``tidings serve``, judged as it goes.

``tidings bench fuzz [--inputs N]`` (default 10,000; 1,000 with ``--quick``). One
``tidings serve`` process (SQLite store, signed webhooks, an identity secret, an owner and
a support agent, per-address limits lifted: every client here is 127.0.0.1) takes
hypothesis-generated input (`bench/hostile.py`) until N inputs were sent:

- ``agent op``: a request for an op of ``ws_agent.OPS`` with plausible or hostile
  arguments, from an owner or a support agent; ``agent frame``: any frame (not JSON, no
  id, too deep…); ``agent auth``: a hostile first frame;
- ``chat hello`` / ``chat frame``: a ``/ws/chat`` visitor's frames;
- ``api``: ``POST /api/*`` cases of every operation of ``GET /api/openapi.json``
  (schemathesis, valid and invalid bodies, some with one field made hostile, raw bodies);
- ``webhook``: ``/sms/inbound`` and ``/sms/status`` form bodies, signed or not;
  ``link``: ``GET /l/{code}``.

Every answer is judged; a failure is counted by kind (`FAILURES`) with its first example:
the process died or ``/healthz`` is not 200 (``crash``), an HTTP 5xx (``http 500``), a
WebSocket closed with 1011 (``ws 1011``), an op answered ``internal`` (a 500 by another
name), a refusal that is not the contract's JSON error or a ``bad_request`` that does not
name an argument of the request, a request not answered exactly once, a connection
closed where the contract keeps it open, an example over 60 s (``hang``), a record the
store holds that no accepted request explains, and ``tidings check`` not clean.

Memory: the server's resident set (``VmRSS`` of ``/proc/<pid>/status``) at the start,
after the warm-up (`WARMUP` inputs, or half of a shorter run), after each 1,000 inputs
and after the last one. The growth after the warm-up must stay under `FLAT_MIB` (see
there for why that figure).
"""

from __future__ import annotations

import functools
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from tidings.bench.harness import Progress, Row, row, scenario
from tidings.bench.websocket import server_process
from tidings.transports.openapi import OPERATIONS, document
from tidings.transports.release import version
from tidings.transports.twilio_signature import compute_signature
from tidings.transports.wire import MAX_FRAME, OP_ROLES, STATUS
from tidings.transports.ws_agent import OPS

if TYPE_CHECKING:  # hypothesis and schemathesis are imported when a run starts
    from hypothesis import strategies as st

    from tidings.bench.hostile import Pool

__all__ = ["FAILURES", "KINDS", "FLAT_MIB", "WARMUP", "Report", "fuzz", "run"]

KINDS = (
    "agent op",
    "agent frame",
    "agent auth",
    "chat hello",
    "chat frame",
    "api",
    "webhook",
    "link",
)
FAILURES = (
    "crash", "http 500", "ws 1011", "internal error", "malformed refusal",
    "refusal not naming its argument", "unanswered request", "connection cut", "hang",
    "store unexplained", "check",
)  # fmt: skip
WARMUP = 1_000
# Growth of the server's RSS allowed after the warm-up ("flat"). What a run may keep in
# memory without leaking: the event log's replay cache (the newest 50,000 events,
# `engine/eventlog.py`: a run logs about 0.6 event an input and keeps them all), the
# actors of the records it makes and touches (a hello makes a session and a profile;
# actors stay resident until idle for the engine's 120 s), the SQLite page cache (2 MiB
# by default) and the freed memory the allocators keep. Two 10,000-input runs grew 7.4
# and 11.9 MiB over the 9,000 inputs after the warm-up (0.8 to 1.4 KiB an input); a
# 20,000-input run grew 16.2 MiB over 19,000, slower in its second half (0.6 KiB an
# input), as the caches fill. A leak of 2 KiB per input (a frame's worth kept per request)
# would add 17.6 MiB over 9,000 inputs, so 16 MiB tells the two apart in the bench; in the
# 1,000-input test it only catches leaks over ~30 KiB an input.
FLAT_MIB = 16.0
EXAMPLE_TIMEOUT_S = 60.0  # a hang guard, not a speed test
AGENTS = {"owner": "fuzz-owner-token", "support": "fuzz-support-token"}
API_KEY = "fuzz-api-key"
AUTH_TOKEN = "fuzz-auth-token"
# what a refusal may name: the op's arguments, or the whole `frame` (not an object…)
ARGUMENTS = {op: {f.encode_name for f in msgspec.structs.fields(args)} | {"frame"}
             for op, (_, args) in OPS.items()}  # fmt: skip
CODES = {*STATUS, "unknown_op", "bad_frame"}  # the error codes of PROTOCOL.md
CHAT_CLOSES = {
    1000,
    4400,
    4403,
}  # what a visitor may be closed with (no hello, not JSON, bad signature)
CONFIG = """
[server]
host = "127.0.0.1"
port = 0
store = "{store}"
[account]
ecommerce = "shopify"
[sms]
sender = "+15550001111"
auth_token = "{auth_token}"
[email]
support_address = "support@acme.example"
[chat]
identity_secret = "{identity_secret}"
[limits]
connections_per_ip = 1000000
new_sessions_per_ip_per_min = 1000000
[api]
keys = ["{api_key}"]
[[agents]]
id = "owner"
name = "Olive"
role = "owner"
token = "{owner}"
[[agents]]
id = "support"
name = "Sam"
role = "support"
token = "{support}"
"""


@dataclass
class Report:
    """What a fuzz run sent and found."""

    inputs: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)  # by kind of input
    rss_kib: dict[str, int] = field(default_factory=dict)
    rss_trend: list[int] = field(default_factory=list)  # KiB after each 1,000 inputs
    events: int = 0  # in the event log at the end (the server keeps the newest in memory)
    check: str = ""
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        """Inputs sent, all kinds."""
        return sum(self.inputs.values())

    @property
    def growth_mib(self) -> float:
        """RSS growth from the end of the warm-up to the end, in MiB."""
        return (self.rss_kib["end"] - self.rss_kib["warm"]) / 1024

    def fail(self, kind: str, example: Any) -> None:
        """Count a failure of `kind` (one of `FAILURES`), keeping its first example."""
        assert kind in FAILURES, kind
        self.failures[kind] += 1
        if self.failures[kind] == 1:
            self.examples[kind] = repr(example)[:400]
            print(f"fuzz: {kind}: {self.examples[kind]}", file=sys.stderr, flush=True)

    def summary(self) -> str:
        """The figures, in a few lines."""
        rss = ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in self.rss_kib.items())
        lines = [
            f"fuzz: {self.sent} inputs in {self.seconds:.0f} s "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.inputs.items()))})",
            f"  RSS: {rss}; growth after warm-up {self.growth_mib:+.1f} MiB (flat: < {FLAT_MIB:g})",
            f"  RSS after each 1,000 inputs: {', '.join(f'{v / 1024:.1f}' for v in self.rss_trend)} MiB",
            f"  events logged: {self.events}; check: {self.check}",
            f"  HTTP statuses: {dict(sorted(self.statuses.items()))}; closes: {dict(sorted(self.closes.items()))}",
            f"  accepted: {dict(sorted(self.accepted.items()))}; error codes: {dict(sorted(self.errors.items()))}",
        ]
        for kind in FAILURES:
            example = f"  e.g. {self.examples[kind]}" if kind in self.examples else ""
            lines.append(f"  {kind}: {self.failures[kind]}{example}")
        return "\n".join(lines)


def rss_kib(pid: int) -> int:
    """The resident set of process `pid` in KiB (`VmRSS` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _size(frame: str | bytes) -> int:
    """The bytes of a frame on the wire."""
    return len(frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame)


def _sent(data: str | bytes | None) -> Any:
    """What the fuzz sent, as JSON values; None for what is not JSON or too deep to read."""
    try:
        return json.loads(data or b"")
    except (ValueError, RecursionError):
        return None


def _keys(frame: str | bytes | None) -> set[str]:
    """The top-level keys of a frame that is a JSON object (the arguments it names)."""
    value = _sent(frame)
    return set(value) if isinstance(value, dict) else set()


def _names(detail: str, names: set[str]) -> bool:
    """Whether `detail` starts with one of `names` (an argument; lone surrogates escaped
    as `\\ud800`), then `:`, `.` or `[`."""
    escaped = {
        n.encode("utf-8", "backslashreplace").decode("utf-8") for n in names
    }  # as refusals name them
    return any(
        detail.startswith(n) and detail[len(n) : len(n) + 1] in (":", ".", "[") for n in escaped
    )


@dataclass
class Target:
    """The server under fuzz, what it made so far (`pool`) and what it accepted."""

    base: str
    pid: int
    report: Report
    pool: Pool
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    quick_replies: set[str] = field(default_factory=set)
    chat_tickets: set[str] = field(default_factory=set)
    settings_answers: list[Any] = field(default_factory=list)
    next_id: int = 1

    @property
    def ws(self) -> str:
        """The WebSocket base URL."""
        return self.base.replace("http://", "ws://", 1)

    def refusal(self, where: str, error: Any, names: set[str], example: Any) -> None:
        """Judge an error body `{"code","detail",…}` refusing a request with arguments `names`."""
        if not (isinstance(error, dict) and isinstance(error.get("code"), str)
                and isinstance(error.get("detail"), str)):  # fmt: skip
            self.report.fail("malformed refusal", (where, error, example))
            return
        self.report.errors[error["code"]] += 1
        if error["code"] == "internal":
            self.report.fail("internal error", (where, error, example))
        elif error["code"] not in CODES:
            self.report.fail("malformed refusal", (where, error, example))
        elif error["code"] == "bad_request" and not _names(error["detail"], names):
            self.report.fail("refusal not naming its argument", (where, error, example))

    def closed(self, code: int, allowed: set[int], example: Any) -> None:
        """Judge a close code."""
        self.report.closes[int(code)] += 1
        if code == 1011:
            self.report.fail("ws 1011", example)
        elif code not in allowed:
            self.report.fail("connection cut", (code, example))


# -- /ws/agent --------------------------------------------------------------------------------


async def agent(target: Target, role: str | None, auth: Any, frames: list[Any]) -> None:
    """One agent connection: auth as `role` (None: the hostile `auth` frame), then `frames`:
    `(op, request)` pairs (an id is added) and raw frames; every frame answered once."""
    report = target.report
    sent: dict[int, tuple[str, dict[str, Any]]] = {}
    keys: set[str] = {"frame"}
    count = refused = 0
    try:
        async with open_websocket_url(
            target.ws + "/ws/agent", max_message_size=16 * MAX_FRAME
        ) as conn:
            if role is None:
                if _size(auth) > MAX_FRAME:
                    return  # closes with 1009: `oversized` tries that
                report.inputs["agent auth"] += 1
                await conn.send_message(auth)
                reply = json.loads(await conn.get_message())
                if reply.get("type") == "ready":
                    report.fail("store unexplained", ("a hostile auth frame was accepted", auth))
                else:
                    target.refusal("agent auth", reply, keys, auth)
                await conn.get_message()  # the close follows
                return
            await conn.send_message(json.dumps({"type": "auth", "token": AGENTS[role]}))
            assert json.loads(await conn.get_message())["type"] == "ready"
            for frame in frames:
                rid, target.next_id = target.next_id, target.next_id + 1
                data = json.dumps({"id": rid, **frame[1]}) if isinstance(frame, tuple) else frame
                if _size(data) > MAX_FRAME:
                    continue  # a frame over the limit closes with 1009: `oversized` tries that
                if isinstance(frame, tuple):
                    sent[rid] = frame
                    keys |= set(frame[1])
                    report.inputs["agent op"] += 1
                else:
                    keys |= _keys(frame)
                    report.inputs["agent frame"] += 1
                await conn.send_message(data)
                count += 1
            while count:
                reply = json.loads(await conn.get_message())
                if reply.get("type") == "event":
                    target.pool.last_seq = max(target.pool.last_seq, reply.get("seq") or 0)
                    continue
                count -= 1
                refused += reply.get("type") == "error"
                _judge_agent(target, role, sent, keys, reply)
    except ConnectionClosed as exc:
        refused = {4400, 4403} if role is None else set()  # a refused auth frame closes
        target.closed(exc.reason.code, refused, ("agent", role, auth if role is None else None))
        if role is not None:
            report.fail("unanswered request", (count, list(sent.values())[:3]))
        return
    # a frame refused before its id was read (too deep to decode, over the rate) is
    # answered by an error frame without id: no more requests than those go unanswered
    if len(sent) > refused:
        report.fail("unanswered request", (len(sent), refused, list(sent.values())[:2]))


def _judge_agent(
    target: Target, role: str, sent: dict[int, Any], keys: set[str], reply: Any
) -> None:
    if reply.get("type") == "error":  # a frame-level refusal: not JSON, no id, too deep, too fast
        target.refusal("agent frame", reply, keys, reply)
        return
    rid = reply.get("id")
    if rid not in sent:  # the answer to a raw frame that happened to carry an integer id
        _explain(target, None, reply.get("result"))
        return
    op, request = sent.pop(rid)
    if reply.get("ok") is False:
        error = reply.get("error")
        target.refusal(op, error, set(request) | ARGUMENTS[op], request)
        if (
            isinstance(error, dict)
            and error.get("code") == "forbidden"
            and role in OP_ROLES.get(op, {role})
        ):
            target.report.fail("malformed refusal", ("forbidden to a role that may", op, role))
        return
    target.report.accepted["agent op"] += 1
    _explain(target, op, reply.get("result"))


def _explain(target: Target, op: str | None, result: Any) -> None:
    """Remember what an accepted request made: `op`'s result (by its shape when the op is
    not known: a raw frame that was a request)."""
    if not isinstance(result, dict):
        return
    if op in ("quick_replies.add", "quick_replies.update") or (
        op is None and set(result) == {"id", "name", "body"}
    ):
        target.quick_replies.add(result["id"])
        target.pool.add("quick_replies", result["id"])
    elif op in ("settings.get", "settings.update") or (op is None and "quiet_hours" in result):
        target.settings_answers.append(result)
    elif op == "subscribe":
        target.pool.last_seq = max(target.pool.last_seq, result.get("seq", 0))


# -- /ws/chat ---------------------------------------------------------------------------------


async def chat(target: Target, hello: dict[str, Any], frames: list[str | bytes]) -> None:
    """One visitor: `hello` (again with a plain one after a `bad_request`), `frames`, then
    a last message whose ack says every frame before it was handled."""
    report = target.report
    if _size(json.dumps(hello)) > MAX_FRAME:
        return  # closes with 1009: `oversized` tries that
    end = f"end-{target.next_id}"
    target.next_id += 1
    replies: list[dict[str, Any]] = []
    ready = False
    try:
        async with open_websocket_url(
            target.ws + "/ws/chat", max_message_size=16 * MAX_FRAME
        ) as conn:
            report.inputs["chat hello"] += 1
            await conn.send_message(json.dumps(hello))
            while not ready:
                reply = json.loads(await conn.get_message())
                if reply.get("type") == "ready":
                    ready = True
                    target.pool.add("sessions", reply["session"])
                    target.pool.add("profiles", reply["profile"])
                    break
                target.refusal(
                    "chat hello", reply, set(hello) | {"frame", "visitor", "identity"}, hello
                )
                if reply.get("code") != "bad_request":
                    await conn.get_message()  # a refused hello closes (4403, 4400)
                    return
                await conn.send_message(json.dumps({"type": "hello"}))  # the connection stays open
            for frame in frames:
                if _size(frame) > MAX_FRAME:
                    continue  # closes with 1009: `oversized` tries that
                report.inputs["chat frame"] += 1
                await conn.send_message(frame)
            await conn.send_message(
                json.dumps({"type": "message", "body": "end", "client_id": end})
            )
            while True:
                reply = json.loads(await conn.get_message())
                replies.append(reply)
                if reply.get("type") == "ack" and reply.get("client_id") == end:
                    break
    except ConnectionClosed as exc:
        target.closed(exc.reason.code, CHAT_CLOSES, ("chat", hello, frames[:3]))
    names = {"frame"}.union(*map(_keys, frames))
    for reply in replies:
        kind = reply.get("type")
        if kind == "error":
            target.refusal("chat frame", reply, names, reply)
        elif kind == "ack":
            report.accepted["chat frame"] += reply.get("client_id") != end
            target.chat_tickets.add(reply["message"]["ticket"])
            target.pool.add("tickets", reply["message"]["ticket"])
        elif kind not in ("pong", "message", "closed"):
            report.fail("malformed refusal", ("unknown chat frame", reply))


# -- HTTP -------------------------------------------------------------------------------------


def _api_operations() -> list[Any]:
    """The schemathesis operations of `GET /api/openapi.json`."""
    import schemathesis  # lazily, with hypothesis: a run needs them, importing the bench not

    return [
        result.ok()
        for result in schemathesis.openapi.from_dict(document(version())).get_all_operations()
    ]


def api_paths() -> set[str]:
    """The paths the fuzz sends `/api/*` cases to: those of the OpenAPI document."""
    return {operation.path for operation in _api_operations()}


@functools.cache
def api_cases() -> st.SearchStrategy[tuple[str, bytes | None, dict[str, str]]]:
    """`(path, body, headers)` for every `/api/*` operation of the OpenAPI document:
    schemathesis' valid and invalid cases, valid ones with one field made hostile, and
    raw bodies."""
    from hypothesis import strategies as st
    from schemathesis.generation import GenerationMode

    from tidings.bench import hostile

    strategies = []
    for operation in _api_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append(operation.as_strategy(generation_mode=mode).map(_case))
    cases = st.one_of(*strategies)
    spoiled = st.tuples(cases, st.integers(0, 64), hostile.hostile).map(_spoil)
    raw = st.tuples(st.sampled_from([f"/api/{name}" for name in OPERATIONS] + ["/api/nope"]),
                    hostile.raw_frames(hostile.hostile).map(lambda b: b if isinstance(b, bytes) else b.encode(
                        "utf-8", "surrogatepass")), st.just({}))  # fmt: skip
    return st.one_of(cases, cases, spoiled, raw)


def _case(case: Any) -> tuple[str, bytes | None, dict[str, str]]:
    body = case.body
    if isinstance(body, bytes):
        data: bytes | None = body
    elif type(body).__name__ == "NotSet":
        data = None
    else:
        data = json.dumps(body).encode("utf-8", "surrogatepass")
    return case.formatted_path, data, {str(k): str(v) for k, v in (case.headers or {}).items()}


def _spoil(args: tuple[tuple[str, bytes | None, dict[str, str]], int, Any]) -> Any:
    (path, body, headers), index, value = args
    obj = _sent(body)
    if not (isinstance(obj, dict) and obj):
        return path, body, headers
    obj[sorted(obj)[index % len(obj)]] = value
    return path, json.dumps(obj).encode("utf-8", "surrogatepass"), headers


_FRAMING = frozenset({"content-length", "transfer-encoding", "host", "connection"})


async def api(target: Target, client: httpx.AsyncClient, case: Any, auth: str) -> None:
    """One `/api/*` request; `auth` is `key` (the right one), `theirs` (the case's own) or `none`."""
    path, body, headers = case
    target.report.inputs["api"] += 1
    # what an HTTP client can send at all (h11 refuses the rest before it leaves, such as a
    # generated Content-Length that does not match the body: the client frames the body)
    headers = {
        k: v.strip()
        for k, v in headers.items()
        if k.isascii() and v.isascii() and v.strip() and k.lower() not in _FRAMING
    }
    if auth == "key":
        headers["Authorization"] = f"Bearer {API_KEY}"
    elif auth == "none":
        headers.pop("Authorization", None)
    headers.setdefault("Content-Type", "application/json")
    r = await _send(
        target, client, "POST", target.base + path, content=body or b"", headers=headers
    )
    if r is None:
        return
    if not _status(target, r, (path, body, headers)):
        return
    try:
        answer = r.json()
    except RecursionError:  # the server answered JSON nested deeper than it accepts
        target.report.fail(
            "malformed refusal", ("answer nested too deep", path, r.status_code, r.content[:300])
        )
        return
    except ValueError:
        answer = None
    if r.status_code == 200:
        target.report.accepted["api"] += 1
        if path == "/api/profiles":
            target.pool.add("profiles", answer["id"])
        return
    error = answer.get("error") if isinstance(answer, dict) else None
    names = {"body", "frame", *_keys(body)}
    properties = document(version())["components"]["schemas"]
    names |= {p for s in properties.values() for p in s.get("properties", {})}
    target.refusal(path, error, names, (path, body, r.status_code))


async def _send(target: Target, client: httpx.AsyncClient, method: str, url: str,
                **kwargs: Any) -> httpx.Response | None:  # fmt: skip
    """The answer to one request, or None after counting a connection closed without one.
    A kept-alive connection the server closed as it idled may break the first try: only a
    second try on a new connection that breaks as well is the input's doing."""
    for attempt in (1, 2):
        try:
            return await client.request(method, url, **kwargs)
        except httpx.RemoteProtocolError as exc:
            if attempt == 2:
                target.report.fail("connection cut", (method, url[:200], kwargs, str(exc)))
    return None


def _status(target: Target, r: httpx.Response, example: Any) -> bool:
    target.report.statuses[r.status_code] += 1
    if r.status_code >= 500:
        target.report.fail("http 500", (example, r.status_code, r.text[:200]))
        return False
    return True


async def webhook(target: Target, client: httpx.AsyncClient, path: str, params: list[tuple[str, str]],
                  signed: bool) -> None:  # fmt: skip
    """One SMS webhook POST; signed ones with unique names reach the inbox."""
    target.report.inputs["webhook"] += 1
    url = target.base + path
    body = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in params)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed:
        try:
            headers["X-Twilio-Signature"] = compute_signature(AUTH_TOKEN, url, params)
        except UnicodeEncodeError:
            pass  # a lone surrogate cannot be signed; sent unsigned
    r = await _send(
        target, client, "POST", url, content=body.encode("utf-8", "surrogatepass"), headers=headers
    )
    if r is not None and _status(target, r, (path, params, signed)) and r.status_code == 200:
        target.report.accepted["webhook"] += 1
        if not signed:
            target.report.fail(
                "store unexplained", ("an unsigned webhook was accepted", path, params)
            )


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text.encode("utf-8", "surrogatepass"), safe="")


async def link(target: Target, client: httpx.AsyncClient, code: str) -> None:
    """`GET /l/{code}`."""
    target.report.inputs["link"] += 1
    r = await _send(target, client, "GET", target.base + "/l/" + _quote(code))
    if r is not None:
        _status(target, r, ("link", code))


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Example:
    """One hypothesis example: an agent connection, a visitor, HTTP requests."""

    role: str | None
    auth: Any
    agent: list[Any]
    hello: dict[str, Any]
    chat: list[str | bytes]
    api: list[tuple[Any, str]]
    webhooks: list[tuple[str, list[tuple[str, str]], bool]]
    links: list[str]


def examples(pool: Pool) -> st.SearchStrategy[Example]:
    """The strategy of one example."""
    from hypothesis import strategies as st

    from tidings.bench import hostile

    agent_frame = hostile.agent_frames(pool)
    raw = hostile.raw_frames(hostile.hostile | agent_frame.map(lambda f: {"id": 1, **f[1]}))
    chat_raw = hostile.raw_frames(hostile.chat_frames(pool))
    return st.builds(
        Example,
        role=st.sampled_from(["owner", "owner", "owner", "support", None]),
        auth=hostile.raw_frames(hostile.hostile | st.fixed_dictionaries(
            {"type": st.just("auth")}, optional={"token": hostile.hostile | st.just(AGENTS["owner"] + "x")})),
        agent=st.lists(hostile.weighted(agent_frame, raw), min_size=2, max_size=12),
        hello=hostile.chat_hellos(pool),
        # any frame that is not JSON closes the chat (4400): one at most, at the end
        chat=st.tuples(st.lists(hostile.chat_frames(pool).map(hostile.encode), max_size=8),
                       hostile.weighted(st.just([]), st.lists(chat_raw, max_size=1))).map(lambda t: t[0] + t[1]),
        api=st.lists(st.tuples(api_cases(), st.sampled_from(["key", "key", "key", "theirs", "none"])),
                     max_size=5),
        webhooks=st.lists(st.tuples(st.sampled_from(["/sms/inbound", "/sms/status"]),
                                    hostile.webhook_bodies(), st.booleans()), max_size=3),
        links=st.lists(hostile.link_codes, max_size=1),
    )  # fmt: skip


async def throw(target: Target, client: httpx.AsyncClient, example: Example) -> None:
    """Send one example and judge every answer."""
    await agent(target, example.role, example.auth, example.agent)
    await chat(target, example.hello, example.chat)
    for case, auth in example.api:
        await api(target, client, case, auth)
    for path, params, signed in example.webhooks:
        await webhook(target, client, path, params, signed)
    for code in example.links:
        await link(target, client, code)


def _hypothesis(target: Target, client: httpx.AsyncClient, inputs: int, warmup: int,
                progress: Progress | None) -> None:  # fmt: skip
    """Runs in a worker thread: hypothesis examples until `inputs` were sent, each one
    thrown from the server's trio loop. Nothing is raised inside an example (failures
    are counted), so hypothesis never shrinks or replays against the live server."""
    from hypothesis import HealthCheck, Phase, given, settings

    strategy = examples(target.pool)
    done = 0

    def one(example: Example) -> None:
        nonlocal done
        if target.report.sent >= inputs:
            return
        done += 1
        trio.from_thread.run(_timed, target, client, example)
        if "warm" not in target.report.rss_kib and target.report.sent >= warmup:
            target.report.rss_kib["warm"] = rss_kib(target.pid)
        if target.report.sent >= 1000 * (len(target.report.rss_trend) + 1):
            target.report.rss_trend.append(rss_kib(target.pid))
        if progress is not None:
            progress(min(target.report.sent / inputs, 1.0), "throwing")

    while target.report.sent < inputs:
        per_example = target.report.sent / done if done else 10
        chunk = max(10, math.ceil((inputs - target.report.sent) / max(per_example, 1)))
        settings(max_examples=chunk, deadline=None, database=None, phases=[Phase.generate],
                 suppress_health_check=list(HealthCheck))(given(strategy)(one))()  # fmt: skip


async def _timed(target: Target, client: httpx.AsyncClient, example: Example) -> None:
    try:
        with trio.fail_after(EXAMPLE_TIMEOUT_S):
            await throw(target, client, example)
    except trio.TooSlowError:
        target.report.fail("hang", example)
    except (httpx.HTTPError, HandshakeError, OSError) as exc:
        target.report.fail("crash", (type(exc).__name__, str(exc)[:200], example))


async def _setup(target: Target, client: httpx.AsyncClient) -> None:
    """Records to aim at: a consenting profile with a phone, its SMS ticket, a quick reply."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    r = await client.post(target.base + "/api/profiles", headers=auth, json={
        "phone": "+15551230000", "email": "c@acme.example", "name": "Casey",
        "consent": {"marketing": True, "transactional": True},
        "location": {"city": None, "region": None, "country": "US", "timezone": "America/New_York"}})  # fmt: skip
    target.pool.add("profiles", r.json()["id"])
    params = [
        ("MessageSid", "SMfuzzsetup"),
        ("From", "+15551230000"),
        ("To", "+15550001111"),
        ("Body", "hi"),
    ]
    url = target.base + "/sms/inbound"
    await client.post(
        url,
        data=dict(params),
        headers={"X-Twilio-Signature": compute_signature(AUTH_TOKEN, url, params)},
    )
    async with open_websocket_url(target.ws + "/ws/agent") as conn:
        await conn.send_message(json.dumps({"type": "auth", "token": AGENTS["owner"]}))
        await conn.get_message()
        await conn.send_message(json.dumps({"id": 0, "op": "tickets.list"}))
        for ticket in json.loads(await conn.get_message())["result"]["tickets"]:
            target.pool.add("tickets", ticket["id"])
        await conn.send_message(
            json.dumps({"id": 0, "op": "quick_replies.add", "name": "hi", "body": "Hello!"})
        )
        reply = json.loads(await conn.get_message())["result"]
        target.quick_replies.add(reply["id"])
        target.pool.add("quick_replies", reply["id"])


async def _explained(target: Target) -> None:
    """What the store holds is explained by what the server accepted: quick replies,
    web chat tickets, and the settings (one of the answers the agents saw)."""
    async with open_websocket_url(target.ws + "/ws/agent") as conn:
        await conn.send_message(json.dumps({"type": "auth", "token": AGENTS["owner"]}))
        await conn.get_message()
        await conn.send_message(json.dumps({"id": 1, "op": "quick_replies.list"}))
        held = {q["id"] for q in json.loads(await conn.get_message())["result"]}
        if held - target.quick_replies:
            target.report.fail("store unexplained", ("quick replies", held - target.quick_replies))
        await conn.send_message(json.dumps({"id": 2, "op": "settings.get"}))
        current = json.loads(await conn.get_message())["result"]
        if target.settings_answers and current not in target.settings_answers[-50:]:
            target.report.fail("store unexplained", ("settings", current))
        cursor = None
        while True:
            await conn.send_message(
                json.dumps({"id": 3, "op": "tickets.list", "limit": 200, "cursor": cursor})
            )
            page = json.loads(await conn.get_message())["result"]
            for ticket in page["tickets"]:
                if ticket["channel"] == "webchat" and ticket["id"] not in target.chat_tickets:
                    target.report.fail("store unexplained", ("ticket", ticket["id"]))
            cursor = page["cursor"]
            if cursor is None:
                break
        await conn.send_message(json.dumps({"id": 4, "op": "subscribe", "since": 2**53}))
        target.report.events = json.loads(await conn.get_message())["result"]["seq"]


async def oversized(target: Target) -> None:
    """Frames over 64 KiB close with 1009; bodies over 1 MiB are 4xx."""
    huge = json.dumps({"type": "message", "body": "x" * (MAX_FRAME + 10), "client_id": "huge"})
    for path, opener in (
        ("/ws/chat", {"type": "hello"}),
        ("/ws/agent", {"type": "auth", "token": AGENTS["owner"]}),
    ):
        try:
            async with open_websocket_url(target.ws + path, max_message_size=4 * MAX_FRAME) as conn:
                await conn.send_message(json.dumps(opener))
                await conn.get_message()
                await conn.send_message(huge)
                while True:
                    await conn.get_message()
        except ConnectionClosed as exc:
            target.closed(exc.reason.code, {1009}, ("oversized", path))
    async with httpx.AsyncClient(timeout=30) as client:
        for path in ("/sms/inbound", "/api/profiles"):
            r = await client.post(target.base + path, content=b"{" * (1024 * 1024 + 10),
                                  headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
            _status(target, r, ("oversized", path))


async def fuzz(inputs: int, progress: Progress | None = None, warmup: int | None = None) -> Report:
    """Run `inputs` hostile inputs against one fresh `tidings serve`; the report."""
    from tidings.bench import hostile

    report = Report()
    warmup = min(WARMUP, inputs // 2) if warmup is None else warmup
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tidings-fuzz-") as tmp:
        store = f"sqlite:///{tmp}/fuzz.db"
        config = Path(tmp) / "fuzz.toml"
        config.write_text(CONFIG.format(store=store, auth_token=AUTH_TOKEN, api_key=API_KEY,
                                        identity_secret=hostile.IDENTITY_SECRET, **AGENTS))  # fmt: skip
        argv = ["-m", "tidings.transports.cli", "serve", "--config", str(config)]
        async with server_process(argv, ("console",)) as server:
            target = Target(server.base, server.process.pid, report, hostile.Pool())
            async with httpx.AsyncClient(timeout=EXAMPLE_TIMEOUT_S) as client:
                await _setup(target, client)
                report.rss_kib["start"] = rss_kib(target.pid)
                await trio.to_thread.run_sync(
                    partial(_hypothesis, target, client, inputs, warmup, progress)
                )
                report.rss_kib.setdefault("warm", report.rss_kib["start"])
                report.rss_kib["end"] = rss_kib(
                    target.pid
                )  # before the 1 MiB bodies of `oversized`
                await oversized(target)
                r = await client.get(target.base + "/healthz")
                if server.process.returncode is not None or r.status_code != 200:
                    report.fail("crash", ("healthz", r.status_code, server.process.returncode))
            await _explained(target)
            checked = await trio.run_process(
                [sys.executable, "-m", "tidings.transports.cli", "check", "--store", store],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            report.check = (checked.stdout + checked.stderr).decode().strip()
            if checked.returncode != 0:
                report.fail("check", report.check)
    report.seconds = time.perf_counter() - started
    return report


def run(inputs: int, progress: Progress | None = None) -> Report:
    """`fuzz` in its own trio loop."""
    return trio.run(fuzz, inputs, progress)


@scenario("fuzz", repeats=1, quick_repeats=1, options=("inputs",))
def fuzz_scenario(quick: bool, progress: Progress, inputs: int | None = None) -> list[Row]:
    """Hostile input to every /ws/agent op, /ws/chat frame, /api/* body and webhook of one server."""
    n = inputs if inputs is not None else (1_000 if quick else 10_000)
    report = run(n, progress)
    progress(1.0, "done")
    print(report.summary())
    rows = [row(f"inputs: {kind}", report.inputs[kind], "inputs") for kind in KINDS]
    rows += [row(f"accepted: {kind}", n, "inputs") for kind, n in sorted(report.accepted.items())]
    rows += [
        row("inputs, all kinds", report.sent, "inputs"),
        row("RSS at start", report.rss_kib["start"] / 1024, "MiB", better="lower"),
        row("RSS after warm-up", report.rss_kib["warm"] / 1024, "MiB", better="lower"),
        row("RSS at the end", report.rss_kib["end"] / 1024, "MiB", better="lower"),
        row("RSS growth after warm-up", report.growth_mib, "MiB", better="lower",
            note=f"flat means < {FLAT_MIB:g} MiB"),
        row("tidings check violations", report.failures["check"], "stores", better="lower",
            note=report.check.splitlines()[-1] if report.check else None),
        row("events logged", report.events, "events"),
        row("duration", report.seconds, "s", better="lower"),
    ]  # fmt: skip
    rows += [
        row(
            f"failures: {kind}",
            report.failures[kind],
            "failures",
            better="lower",
            note=report.examples.get(kind),
        )
        for kind in FAILURES
    ]
    return rows
