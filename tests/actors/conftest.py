"""An inbox on the memory store, with outbox providers and trio's mock clock.

pytest-trio uses a mock clock only when the test itself takes it as an argument, so every
test that takes `harness` also takes `autojump_clock`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio.testing
from tidings.actors.brand import Account, Timing
from tidings.actors.inbox import Inbox, open_inbox
from tidings.engine import TrioWallClock
from tidings.engine.store.memory import MemoryStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

# Wednesday 2027-01-13 15:00:00 UTC = 10:00 in New York
START = 1_800_000_000.0 - (1_800_000_000.0 % 86400) - 2 * 86400 + 15 * 3600
PHONE = "+15551230000"


class Harness:
    """What a rule test needs: the inbox, its outboxes and its store."""

    def __init__(self, inbox: Inbox, sms: OutboxSms, mail: OutboxMail, store: MemoryStore) -> None:
        self.inbox = inbox
        self.sms = sms
        self.mail = mail
        self.store = store

    async def events(self, since: int = 0) -> list[dict[str, Any]]:
        import msgspec

        got: list[dict[str, Any]] = []
        if self.inbox.last_seq <= since:
            return got
        async for seq, payload in self.inbox.events(since):
            got.append(msgspec.json.decode(payload))
            if seq >= self.inbox.last_seq:
                break
        return got

    async def subscribed_profile(self, phone: str = PHONE, **extra: Any) -> str:
        profile = await self.inbox.upsert_profile(
            {"phone": phone, "consent": {"marketing": False, "transactional": True}, **extra}
        )
        return profile.id


ACCOUNT = Account(
    name="Acme",
    organization_prefix="Acme",
    timezone="America/New_York",
    support_email="support@acme.example",
    sms_sender="+15550001111",
    public_url="https://support.acme.example",
)


@pytest.fixture
async def harness(autojump_clock: trio.testing.MockClock) -> AsyncIterator[Harness]:
    store = MemoryStore()
    sms, mail = OutboxSms(), OutboxMail()
    async with open_inbox(
        store, account=ACCOUNT, timing=Timing(), sms=sms, mail=mail, clock=TrioWallClock(START)
    ) as inbox:
        yield Harness(inbox, sms, mail, store)
