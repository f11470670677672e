"""What the ``fuzz`` scenario throws at a server: hypothesis strategies for every
``/ws/agent`` op and argument, every ``/ws/chat`` frame, every ``/api/*`` operation of
the OpenAPI document, the SMS webhooks and short links.

Every argument is drawn from a *plausible* strategy (values that reach the inbox's own
checks, ids of records that exist) or a *hostile* one: any JSON type, big sizes, nesting
deeper than the 32 levels the contract allows, text with NUL, lone surrogates, right-to-left
marks and astral characters, numbers beyond 64 bits, and dates no calendar has. The op
and frame tables are checked against the code (`missing_strategies`): an op of
`ws_agent.OPS` or a chat frame of `ws_chat.ChatFrame` without a strategy for each of its
arguments is an error, so whatever is added to the wire is fuzzed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import strategies as st

from tidings.transports.ws_agent import OPS
from tidings.transports.ws_chat import ChatFrame

__all__ = [
    "Pool", "hostile", "agent_frames", "chat_hellos", "chat_frames", "webhook_bodies",
    "link_codes", "raw_frames", "op_arguments", "chat_arguments", "missing_strategies",
    "signed_identity", "IDENTITY_SECRET", "DEEP", "weighted", "encode",
]  # fmt: skip

DEEP = 32  # the nesting the contract allows; hostile values go past it
IDENTITY_SECRET = "fuzz-identity-secret"
S = st.SearchStrategy


@dataclass
class Pool:
    """Ids of records the server has made so far, for plausible arguments (`pick` wraps
    an index drawn by hypothesis onto the list as it is when the frame is sent)."""

    tickets: list[str] = field(default_factory=lambda: ["t-none"])
    profiles: list[str] = field(default_factory=lambda: ["p-none"])
    quick_replies: list[str] = field(default_factory=lambda: ["q-none"])
    sessions: list[str] = field(default_factory=lambda: ["s-none"])
    last_seq: int = 0

    def add(self, kind: str, value: str) -> None:
        """Remember a record id of `kind` (`tickets`, `profiles`, …) once."""
        ids: list[str] = getattr(self, kind)
        if value not in ids:
            ids.append(value)

    def pick(self, kind: str) -> S[str]:
        """A strategy for an id of `kind` that exists (or the placeholder)."""
        return st.integers(0, 2**16).map(lambda i: (ids := getattr(self, kind))[-1 - i % len(ids)])


# -- hostile values ---------------------------------------------------------------------------

NASTY = ["\x00", "a\x00b", "\ud800", "x\udfff", "\u202eevil", "\ufeff",
         "🙂" * 40, "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u0301" * 30, "%00", "' OR 1=1 --", "<script>x</script>",
         "{{ organization_prefix }}", "../../etc/passwd", " ", "\t\n", "null"]  # fmt: skip
DATES = ["9999-12-31T23:59:59.999999+00:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+00:00",
         "0001-01-01T00:00:00+14:00", "10000-01-01T00:00:00Z", "+275760-09-13T00:00:00Z",
         "-0001-01-01T00:00:00Z", "2026-02-30T10:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T25:61:61Z",
         "2026-01-01T00:00:00+99:00", "2030-01-01T00:00:00", "2030-01-01", "1970-01-01T00:00:00Z",
         "2999-01-01T00:00:00.123456789+00:00", "9" * 40, "later_today", "tomorrow", "next_week", ""]  # fmt: skip
NUMBERS = [2**63, 2**63 - 1, -(2**63) - 1, 2**64, 10**30, -(10**30), 1e308, -1e308, 5e-324, 0,
           -1, 0.5, 1e16]  # fmt: skip

texts = st.one_of(
    st.text(max_size=24),
    st.text(st.characters(codec=None, categories=None), max_size=24),  # lone surrogates too
    st.sampled_from(NASTY),
    st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=3), st.integers(100, 2000)),
    st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(max_size=8)),
)
numbers = st.one_of(
    st.integers(), st.sampled_from(NUMBERS), st.floats(allow_nan=False, allow_infinity=False),
    st.integers(20, 400).map(lambda digits: 10**digits),  # past any integer type
)
dates = st.sampled_from(DATES) | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
scalars = st.none() | st.booleans() | numbers | texts | dates


def _nest(depth: int, kind: int, leaf: Any) -> Any:
    for level in range(depth):
        leaf = [leaf] if (kind >> (level % 8)) & 1 else {"k": leaf}
    return leaf


deep = st.builds(_nest, st.integers(DEEP - 2, 400), st.integers(0, 255), scalars)
hostile: S[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
    max_leaves=12,
) | deep | st.builds(lambda start, n: list(range(start, start + n)), numbers.filter(
    lambda x: isinstance(x, int)), st.integers(200, 1500))  # big, from a few draws


def weighted(usual: S[Any], odd: S[Any]) -> S[Any]:
    """`usual` three times in four, else `odd` (`st.one_of` would weigh their branches)."""
    return st.integers(0, 3).flatmap(lambda i: odd if i == 0 else usual)


def either(plausible: S[Any]) -> S[Any]:
    """An argument: mostly plausible, else hostile."""
    return weighted(plausible, hostile)


# -- /ws/agent --------------------------------------------------------------------------------

STATES = st.sampled_from(["open", "snoozed", "closed", "OPEN", "deleted", ""])
TIMES = st.sampled_from(["08:00", "20:00", "00:00", "23:59", "24:00", "9:00", "25:00", "xx:yy"])
URLS = st.sampled_from(["https://acme.example/a.png", "http://x", "javascript:alert(1)", "ftp://x/y", ""])
EMAILS = st.sampled_from(["a@acme.example", "b@b.example", "not-an-email", "@", ""]) | texts


def _settings(pool: Pool) -> S[Any]:
    autoresponder = st.fixed_dictionaries({}, optional={
        "mode": either(st.sampled_from(["everyone", "non_consented", "off", "all"])), "text": texts})  # fmt: skip
    hours = st.fixed_dictionaries({}, optional={
        "enabled": either(st.booleans()),
        "days": either(st.dictionaries(st.sampled_from(["mon", "tue", "sun", "xyz"]),
                                       st.lists(st.lists(TIMES, max_size=3), max_size=3), max_size=3)),
        "inside_message": texts, "outside_message": texts})  # fmt: skip
    partial = st.fixed_dictionaries({}, optional={
        "sms": either(st.fixed_dictionaries({}, optional={"shorten_links": either(st.booleans()),
                                                          "autoresponder": either(autoresponder)})),
        "webchat": either(st.fixed_dictionaries({}, optional={
            "followup_email": either(st.booleans()), "welcome_message": texts,
            "office_hours": either(hours)})),
        "notifications": either(st.fixed_dictionaries({}, optional={
            "unread_badge": either(st.booleans()),
            "new_ticket_email": either(st.fixed_dictionaries({}, optional={
                "enabled": either(st.booleans()), "recipients": either(st.lists(EMAILS, max_size=3))}))})),
        "attribution_window_s": either(st.integers(-10, 10**9)),
        "quiet_hours": either(st.fixed_dictionaries({}, optional={"start": either(TIMES),
                                                                  "end": either(TIMES)})),
        "unknown": hostile})  # fmt: skip
    return either(partial)


def op_arguments(pool: Pool) -> dict[str, dict[str, S[Any]]]:
    """For every op of `ws_agent.OPS`, a strategy for each of its arguments."""
    ticket, profile, reply = (either(pool.pick(k)) for k in ("tickets", "profiles", "quick_replies"))
    since = st.builds(lambda back: max(pool.last_seq - back, 0), st.integers(0, 50))
    return {
        "tickets.list": {
            "state": either(STATES), "unread": either(st.booleans()),
            "channel": either(st.sampled_from(["sms", "webchat", "email"])),
            "attributed_to": either(st.sampled_from(["campaign:c1", "flow:f1", "campaign:", "x:y"])),
            "order": either(st.sampled_from(["activity", "waiting", "random"])),
            "limit": either(st.integers(-5, 300)), "cursor": either(texts),
            "assignee": either(st.sampled_from(["me", "none", "owner", "support", "nobody"])),
        },
        "ticket.get": {"ticket": ticket},
        "ticket.reply": {
            "ticket": ticket, "body": either(texts), "media": either(st.lists(URLS, max_size=3)),
            "send_anyway": either(st.booleans()), "schedule": either(st.booleans()),
        },
        "ticket.set_state": {"ticket": ticket, "state": either(STATES), "until": either(dates)},
        "ticket.mark": {"ticket": ticket, "read": either(st.booleans())},
        "ticket.assign": {"ticket": ticket, "agent": either(st.sampled_from([None, "owner", "support", "nobody"]))},
        "ticket.note": {"ticket": ticket, "body": either(texts)},
        "profile.get": {"profile": profile, "metric": either(st.sampled_from(["Placed Order", "Clicked SMS link"]))},
        "profile.block": {"profile": profile},
        "profile.unblock": {"profile": profile},
        "badge.get": {},
        "settings.get": {},
        "settings.update": {"settings": _settings(pool)},
        "quick_replies.list": {"q": either(texts)},
        "quick_replies.add": {"name": either(texts), "body": either(texts)},
        "quick_replies.update": {"quick_reply": reply, "name": either(texts), "body": either(texts)},
        "quick_replies.delete": {"quick_reply": reply},
        "subscribe": {"since": either(since)},
        "messages.search": {"q": either(st.sampled_from(["hi", "end", "HELLO there", ""]) | texts),
                            "limit": either(st.integers(-5, 100)), "cursor": either(texts)},
        "profiles.search": {"q": either(st.sampled_from(["Casey", "+1555", "acme.example", ""]) | texts)},
    }  # fmt: skip


def _arguments_of(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


def chat_arguments(pool: Pool) -> dict[str, dict[str, S[Any]]]:
    """For every frame type of `ws_chat.ChatFrame` (by its `type` tag), a strategy for
    each of its fields."""
    visitor = st.fixed_dictionaries({}, optional={
        "email": either(EMAILS), "name": either(texts),
        "phone": either(st.sampled_from(["+15551230000", "+1555", "555-1234"]) | texts)})  # fmt: skip
    identity = st.fixed_dictionaries({}, optional={
        "email": either(EMAILS), "phone": either(st.sampled_from(["+15557770000", "0"]))})  # fmt: skip
    return {
        "hello": {"session": either(st.none() | pool.pick("sessions")), "visitor": either(visitor),
                  "identity": either(identity), "signature": either(st.text("0123456789abcdef", max_size=64))},
        "message": {"body": either(texts), "client_id": either(st.none() | st.text(max_size=12))},
        "typing": {},
        "ping": {},
    }  # fmt: skip


def _chat_types() -> dict[str, type[msgspec.Struct]]:
    return {t.__struct_config__.tag: t for t in typing.get_args(ChatFrame)}  # type: ignore[misc]


def missing_strategies(pool: Pool | None = None) -> list[str]:
    """Ops, chat frames and arguments of the code that have no strategy here (or that
    have one but no longer exist): `op ticket.reply: media`, `chat frame typing`, …"""
    pool = pool or Pool()
    found: list[str] = []
    for what, code, table in (
        ("op", {op: args for op, (_, args) in OPS.items()}, op_arguments(pool)),
        ("chat frame", _chat_types(), chat_arguments(pool)),
    ):
        for name in sorted(set(code) | set(table)):
            if name not in table or name not in code:
                found.append(f"{what} {name}")
                continue
            expected = _arguments_of(code[name]) - {"type"}
            found += [f"{what} {name}: {arg}" for arg in sorted(expected ^ set(table[name]))]
    return found


_ABSENT = object()


def _object(head: dict[str, Any], arguments: dict[str, S[Any]]) -> S[dict[str, Any]]:
    """`head` with each argument mostly present, and now and then an unknown one."""
    present = {name: weighted(value, st.just(_ABSENT)) for name, value in arguments.items()}
    return st.fixed_dictionaries(present, optional={"unexpected": hostile}).map(
        lambda args: {**head, **{k: v for k, v in args.items() if v is not _ABSENT}}
    )


def agent_frames(pool: Pool) -> S[tuple[str, dict[str, Any]]]:
    """`(op, frame without id)` for a random op of `OPS`, every op equally likely."""
    table = op_arguments(pool)
    return st.sampled_from(sorted(OPS)).flatmap(
        lambda op: _object({"op": op}, table[op]).map(lambda frame: (op, frame))
    )


def chat_hellos(pool: Pool) -> S[dict[str, Any]]:
    """A first `/ws/chat` frame: a hello with the visitor's claims, with every field, or
    with an identity signed right."""
    fields = chat_arguments(pool)["hello"]
    claims = _object({"type": "hello"}, {k: fields[k] for k in ("session", "visitor")})
    signed = st.builds(signed_identity, st.sampled_from(
        [{"email": "vip@acme.example"}, {"phone": "+15557770001"}, {"email": "Vip@Acme.example"}]))  # fmt: skip
    return weighted(weighted(claims, _object({"type": "hello"}, fields)), signed)


def signed_identity(identity: dict[str, str]) -> dict[str, Any]:
    """A hello with `identity` signed with `IDENTITY_SECRET`."""
    value = next(iter(identity.values()))
    signature = hmac.new(IDENTITY_SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()
    return {"type": "hello", "identity": identity, "signature": signature}


def chat_frames(pool: Pool) -> S[dict[str, Any]]:
    """A `/ws/chat` frame after hello, every type equally likely, and unknown types."""
    table = chat_arguments(pool)
    known = st.sampled_from(sorted(table)).flatmap(lambda t: _object({"type": t}, table[t]))
    return weighted(known, texts.flatmap(lambda t: _object({"type": t}, {})))


def raw_frames(objects: S[Any]) -> S[str | bytes]:
    """A WebSocket frame of `objects` as JSON text or UTF-8 bytes, or of any text or bytes."""
    return st.one_of(
        objects.map(encode),
        objects.map(lambda o: encode(o).encode("utf-8", "surrogatepass")),
        st.text(max_size=60),
        st.binary(max_size=60),
        st.sampled_from(["[", '{"a":']).map(lambda opener: opener * 5000),  # past any parser's depth
        st.sampled_from(["NaN", '{"id":1,"op":"badge.get"', "\x00", "", "[]", "{}"]),
    )


def encode(value: Any) -> str:
    """`value` as JSON text; lone surrogates as `\\ud800` escapes, numbers exactly."""
    return json.dumps(value)


# -- HTTP -------------------------------------------------------------------------------------

FORM_NAMES = st.sampled_from(["MessageSid", "From", "To", "Body", "NumMedia", "MediaUrl0",
                              "MediaContentType0", "MessageStatus", "ErrorCode", "AccountSid"]) | texts  # fmt: skip
FORM_VALUES = st.one_of(
    st.sampled_from(["+15551230000", "+15550001111", "STOP", "START", "HELP", "delivered", "failed",
                     "99999999999999999999", "-1", "30007", "SM" + "0" * 32]),
    texts,
)  # fmt: skip


def webhook_bodies() -> S[list[tuple[str, str]]]:
    """Form parameters of an SMS webhook (names may repeat)."""
    return st.lists(st.tuples(FORM_NAMES, FORM_VALUES), max_size=8)


link_codes: S[str] = st.one_of(st.text(max_size=30), st.sampled_from(["", "..", "%00", "🙂"]),
                               st.integers(1000, 9000).map(lambda n: "a" * n))  # fmt: skip
