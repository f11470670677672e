"""Shared pieces of the HTTP and WebSocket transports: the running context, error
codes mapped to HTTP statuses, and msgspec validation errors turned into `bad_request`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from tidings.actors.errors import InboxError

if TYPE_CHECKING:
    from tidings.actors.inbox import Inbox
    from tidings.transports.config import AgentConfig, Config

__all__ = [
    "Context", "STATUS", "ALLOWED_ROLES", "OP_ROLES", "validation_error", "error_body", "MAX_FRAME",
]  # fmt: skip

MAX_FRAME = 64 * 1024  # bytes; bigger WebSocket frames are refused with close code 1009
ALLOWED_ROLES = frozenset({"owner", "admin", "manager", "support"})  # R29
# Ops that not every inbox role may call (contract v3, "Roles per operation"): changing
# the settings redirects notifications, so it is kept to the roles that run the inbox.
OP_ROLES = {"settings.update": frozenset({"owner", "admin", "manager"})}

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
}


@dataclass
class Context:
    """What the endpoints share: the config, the inbox (set once it runs), who may connect."""

    config: Config
    agents: dict[str, AgentConfig]  # by token
    api_keys: frozenset[str]
    public_base: str = ""
    inbox: Inbox | None = None
    chat_messages_in: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def require_inbox(self) -> Inbox:
        """The running inbox; an `InboxError` while it is still starting."""
        if self.inbox is None:
            raise InboxError("unavailable", "the engine is starting")
        return self.inbox


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


def error_body(exc: InboxError) -> dict[str, Any]:
    """The wire's `{"code","detail",…extra}` of an error."""
    return {"code": exc.code, "detail": exc.detail, **exc.extra}
