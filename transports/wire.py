"""Shared pieces of the HTTP and WebSocket transports: the running context, error
codes mapped to HTTP statuses, and msgspec validation errors turned into `bad_request`."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from tidings.actors.errors import InboxError

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from tidings.actors.inbox import Inbox
    from tidings.transports.config import AgentConfig, Config, LimitsConfig

__all__ = [
    "Context", "STATUS", "ALLOWED_ROLES", "OP_ROLES", "validation_error", "error_body", "MAX_FRAME",
    "secret_matches", "NotJson", "decode_json", "refuse_bad_text", "bad_text", "MAX_DEPTH",
    "PerAddress",
]  # fmt: skip

MAX_DEPTH = 32  # nesting levels of JSON a request may have (contract v3)
MAX_FRAME = 64 * 1024  # bytes; bigger WebSocket frames are refused with close code 1009
ALLOWED_ROLES = frozenset({"owner", "admin", "manager", "support"})  # R29
# Who may call an op (contract v3, "Roles per operation"): changing the settings
# redirects notifications, so it is kept to the roles that run the inbox; the team
# workflow ops are every inbox role's. An op not named here is open to every inbox role.
OP_ROLES = {
    "settings.update": frozenset({"owner", "admin", "manager"}),
    "ticket.assign": ALLOWED_ROLES,
    "ticket.note": ALLOWED_ROLES,
}

STATUS = {
    "not_found": 404,
    "bad_request": 400,
    "not_subscribed": 409,
    "ticket_closed": 409,
    "blocked": 409,
    "cannot_reopen": 409,
    "quiet_hours": 409,
    "forbidden": 403,
    "unauthorized": 401,
    "timeout": 408,
    "rate_limited": 429,
}

SESSION_WINDOW_S = 60.0  # `limits.new_sessions_per_ip_per_min` counts this far back


class PerAddress:
    """What each client address holds: open WebSocket connections and the new chat
    sessions it started in the last minute (`[limits]`). Addresses holding nothing are
    forgotten, so the table is as big as the current clients, not all past ones."""

    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.connections: dict[str, int] = {}
        self.sessions: dict[str, deque[float]] = {}
        self.pruned_at = trio.current_time()

    def connect(self, address: str) -> bool:
        """Count a new connection from `address`; False (not counted) when at the limit."""
        held = self.connections.get(address, 0)
        if held >= self.limits.connections_per_ip:
            return False
        self.connections[address] = held + 1
        return True

    def disconnect(self, address: str) -> None:
        """A connection `connect` counted has closed."""
        held = self.connections.pop(address, 1) - 1
        if held > 0:
            self.connections[address] = held

    def start_session(self, address: str) -> bool:
        """Count a new chat session from `address`; False when it started too many."""
        now = trio.current_time()
        if now - self.pruned_at >= SESSION_WINDOW_S:
            self.pruned_at = now
            for gone in [a for a, r in self.sessions.items() if r[-1] <= now - SESSION_WINDOW_S]:
                del self.sessions[gone]
        recent = self.sessions.setdefault(address, deque())
        while recent and recent[0] <= now - SESSION_WINDOW_S:
            recent.popleft()
        if len(recent) >= self.limits.new_sessions_per_ip_per_min:
            return False
        recent.append(now)
        return True


@dataclass
class Context:
    """What the endpoints share: the config, the inbox (set once it runs), who may connect."""

    config: Config
    agents: dict[str, AgentConfig]  # by token
    api_keys: frozenset[str]
    addresses: PerAddress
    public_base: str = ""
    inbox: Inbox | None = None
    chat_messages_in: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def require_inbox(self) -> Inbox:
        """The running inbox; an `InboxError` while it is still starting."""
        if self.inbox is None:
            raise InboxError("unavailable", "the engine is starting")
        return self.inbox

    @cached_property
    def _proxies(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(p) for p in self.config.server.trusted_proxies)

    def address_of(self, connection: HTTPConnection) -> str:
        """The address the `[limits]` count `connection` against. It is the TCP peer,
        unless the peer is one of `server.trusted_proxies`: then it is the rightmost
        `X-Forwarded-For` address that is not a trusted proxy itself (a proxy appends
        the address it got the request from, so everything left of that could be forged
        by the client)."""
        peer = connection.client.host if connection.client else ""
        forwarded = connection.headers.getlist("x-forwarded-for")
        return client_address(peer, forwarded, self._proxies)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool | None:
    """Whether `address` is in `proxies`; None when it is not an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return any(ip in network for network in proxies)


def client_address(peer: str, forwarded_for: list[str], proxies: tuple[Network, ...]) -> str:
    """See `Context.address_of`; `forwarded_for` are the header's values in order."""
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        trusted = _trusted(hop, proxies)
        if trusted is None:
            return peer  # the trusted proxy wrote something unusable: count the proxy
        if not trusted:
            return hop
    return peer


def secret_matches(given: str, known: Iterable[str]) -> str | None:
    """The one of `known` (agent tokens, API keys) equal to `given`, or None. Compared as
    bytes in constant time against every candidate, so neither the time taken nor a
    non-ASCII `given` tells anything (`compare_digest` on `str` refuses non-ASCII)."""
    wanted = given.encode("utf-8", "surrogatepass")
    found = None
    for secret in known:
        if hmac.compare_digest(wanted, secret.encode("utf-8", "surrogatepass")):
            found = secret
    return found


_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`(?: - at `\$(?P<at>.*)`)?$")
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<at>.*)`)?$")


def validation_error(exc: msgspec.ValidationError, prefix: str = "") -> InboxError:
    """`bad_request` naming the argument that msgspec refused (`ticket: is required`)."""
    text = str(exc)
    if m := _MISSING.match(text):
        at = (m["at"] or "").lstrip(".")
        name = f"{at}.{m['name']}" if at else m["name"]
        return InboxError("bad_request", f"{prefix}{name}: is required")
    m = _AT.match(text)
    assert m is not None
    at = (m["at"] or "").lstrip(".") or "frame"
    msg = m["msg"].replace("`", "")
    return InboxError("bad_request", f"{prefix}{at}: {msg[:1].lower()}{msg[1:]}")


class NotJson(Exception):
    """Data that is not JSON at all."""


def _walk(value: Any) -> Iterator[tuple[str, int, Any]]:
    """Every value inside `value` (keys included) as `(path, depth, value)`, without
    recursion, so that any depth is walked safely. Depth 1 is the top level."""
    stack: list[tuple[str, int, Any]] = [("", 1, value)]
    while stack:
        path, depth, item = stack.pop()
        yield path, depth, item
        if isinstance(item, dict):
            for key, child in item.items():
                at = f"{path}.{key}" if path else str(key)
                yield at, depth + 1, key
                stack.append((at, depth + 1, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", depth + 1, child) for i, child in enumerate(item))


def decode_json(data: str | bytes) -> Any:
    """The JSON value of a frame or request body. Raises `NotJson`, or a `bad_request`
    `InboxError` for JSON nested deeper than `MAX_DEPTH` — the one place where what a
    client sends becomes Python values, so no transport meets a `RecursionError`."""
    try:
        value = msgspec.json.decode(data)
    except RecursionError:
        raise _too_deep("frame") from None
    except (msgspec.DecodeError, UnicodeEncodeError):
        # msgspec refuses lone surrogates (`"\ud800"`), which are JSON all the same:
        # decode them here so that `refuse_bad_text` can name the argument.
        try:
            value = json.loads(data, parse_constant=_no_constant)
        except RecursionError:
            raise _too_deep("frame") from None
        except ValueError:
            raise NotJson from None
    if _flat(value):  # most frames: an object of scalars, two levels deep at most
        return value
    for path, depth, item in _walk(value):
        if depth > MAX_DEPTH and isinstance(item, dict | list):
            raise _too_deep(path.partition(".")[0].partition("[")[0] or "frame")
    return value


_SCALARS = (str, int, float, bool, type(None))


def _flat(value: Any) -> bool:
    """Whether `value` is a JSON object whose values are all scalars: no nesting to walk,
    so its strings can be checked without building the paths `_walk` names them by."""
    return type(value) is dict and all(type(v) in _SCALARS for v in value.values())


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN, msgspec does not


def _too_deep(argument: str) -> InboxError:
    return InboxError("bad_request", f"{argument}: nested deeper than {MAX_DEPTH} levels")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def bad_text(text: str) -> bool:
    """Whether `text` holds a NUL or a lone surrogate (see `refuse_bad_text`)."""
    return _BAD_TEXT.search(text) is not None


def refuse_bad_text(value: Any, prefix: str = "") -> None:
    """Raise `bad_request` naming the first string (value or key) in `value` that holds a
    NUL or a lone surrogate: text the store, e-mail and SMS cannot carry."""
    if _flat(value) and not any(
        (type(k) is str and bad_text(k)) or (type(v) is str and bad_text(v))
        for k, v in value.items()
    ):
        return  # the common case, without the paths only an error needs
    for path, _, item in _walk(value):
        if not isinstance(item, str):
            continue
        # the name itself may be bad text: named with `\ud800` escapes, so the refusal
        # can be encoded as JSON (a lone surrogate cannot be)
        where = f"{prefix}{path if path[:1] not in ('', '[') else 'frame' + path}"
        where = where.encode("utf-8", "backslashreplace").decode("utf-8")
        if "\x00" in item:
            raise InboxError("bad_request", f"{where}: must not contain NUL characters")
        if _LONE_SURROGATE.search(item):
            raise InboxError("bad_request", f"{where}: must not contain lone surrogates")


def error_body(exc: InboxError) -> dict[str, Any]:
    """The wire's `{"code","detail",…extra}` of an error."""
    return {"code": exc.code, "detail": exc.detail, **exc.extra}
