"""The inbox's refusals, each with the error code of PROTOCOL.md."""

from __future__ import annotations

from typing import Any

from tidings.engine import Refused


class InboxError(Refused):
    """A request the inbox refuses: `code` (e.g. `not_subscribed`), `detail`, and any extra
    fields the wire error carries (e.g. `local_time` and `timezone` for `quiet_hours`)."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.extra = extra


def not_found(what: str, key: str) -> InboxError:
    """No such ticket, profile, quick reply, …"""
    return InboxError("not_found", f"no {what} {key!r}")


def bad_request(argument: str, reason: str) -> InboxError:
    """An argument is missing or wrong; `detail` starts with its name."""
    return InboxError("bad_request", f"{argument}: {reason}")
