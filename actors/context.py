"""`InboxContext`: what the inbox's actors, threads and courier may use of the inbox.

The actors get it as `ctx.app` (the engine's typed domain context); `Inbox`, the facade
on top, builds it and keeps its values current (settings, link secret, badge). Nothing
below `inbox.py` imports the facade.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tidings.actors import settings as settings_rules
from tidings.actors.brand import Account, Timing
from tidings.actors.model import Message
from tidings.actors.outbound import Email
from tidings.actors.sessions import Sessions
from tidings.actors.templates import Template
from tidings.engine import Batch, WallClock

DIRECTORY_CACHED = 200_000  # phone and e-mail mappings kept in memory before starting over


class Outbox(Protocol):
    """Where outbound SMS and e-mail jobs go (the courier)."""

    def add_sms(self, batch: Batch, message: Message, phone: str) -> None: ...

    def add_email(self, batch: Batch, job_id: str, email: Email) -> None: ...

    def wake(self) -> None: ...


class DirectoryCache:
    """phone/e-mail (`phone:…`/`email:…`) → profile id, as the directory answered.
    Profiles that change their phone or e-mail `forget` the keys, so an inbound SMS can
    skip the directory's turn."""

    def __init__(self, limit: int = DIRECTORY_CACHED) -> None:
        self._limit = limit
        self._known: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        """The profile of `key`, if known here."""
        return self._known.get(key)

    def put(self, key: str, profile: str) -> None:
        """Remember the directory's answer for `key`."""
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known[key] = profile

    def forget(self, key: str) -> None:
        """A profile gave up or took `key`: ask the directory again."""
        self._known.pop(key, None)


@dataclass(eq=False)
class InboxContext:
    """The inbox's shared values and services, as its actors see them."""

    clock: WallClock
    account: Account
    timing: Timing
    outbox: Outbox
    sessions: Sessions = field(default_factory=Sessions)
    settings: settings_rules.Settings = field(default_factory=settings_rules.Settings)
    link_secret: bytes = b""
    directory: DirectoryCache = field(default_factory=DirectoryCache)
    badge: int = 0  # R18: profiles with an open ticket with unread messages
    # told each ticket's first-response time (R28) once it is committed (metrics)
    on_first_response: Callable[[float], None] | None = None
    _templates: dict[str, Template] = field(default_factory=dict)

    def now(self) -> float:
        """Wall-clock time, epoch seconds."""
        return self.clock.now()

    def render(self, text: str) -> str:
        """A message template filled with the brand's fields (R20)."""
        template = self._templates.get(text)
        if template is None:
            template = self._templates[text] = Template(text, settings_rules.TEMPLATE_FIELDS)
        return template.render(self.account.template_values())

    def sender_address(self) -> str:
        """The address e-mails come from."""
        return self.account.support_email or f"no-reply@{self.account.name.lower()}.invalid"

    def committed(self, batch: Batch) -> None:
        """After every commit: wake the outbox when the batch queued jobs."""
        if any(key.startswith("outbox:") for key in batch.puts):
            self.outbox.wake()
