"""What actors send one another: addresses, and requests that declare their reply type.

A tell-only message is any value (usually a `msgspec.Struct`). A message that wants an
answer subclasses `Request[R]`, naming the type of the answer, so that
`ask(address, msg)` is typed `R` for the caller:

    class GetTicket(Request[Ticket], frozen=True):
        id: str

A durable timer's message must be a Struct with an explicit `tag=` (its stable name in the
store, which survives renaming the class).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

Address = tuple[str, str]
"""`(kind, key)`: where an actor lives."""

R = TypeVar("R")


class Request(msgspec.Struct, Generic[R]):
    """Base of messages answered by `ask`; `R` is the type of the answer."""


def struct_tag(msg_type: type[Any]) -> str | None:
    """The explicit `tag=` of a msgspec Struct type, or None (not a Struct, or no tag)."""
    config = getattr(msg_type, "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return tag if isinstance(tag, str) else None
