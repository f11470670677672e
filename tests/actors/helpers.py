"""What the inbox rule tests share: the start time, the brand, and `Harness`."""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from tidings.actors.brand import Account
from tidings.actors.inbox import Inbox
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
        got: list[dict[str, Any]] = []
        if self.inbox.last_seq <= since:
            return got
        async for seq, payload in self.inbox.events(since):
            if seq is None:
                continue  # live only (visitor.typing): not part of the stored log
            got.append(msgspec.json.decode(payload))
            if seq >= self.inbox.last_seq:
                break
        return got

    async def subscribed_profile(self, phone: str = PHONE, **extra: Any) -> str:
        profile = await self.inbox.upsert_profile(
            {"phone": phone, "consent": {"marketing": False, "transactional": True}, **extra}
        )
        return profile.id


async def offline_visitor(harness: Harness, email: str | None) -> tuple[str, str]:
    """A web chat visitor who wrote, then left (past the offline grace): (session, ticket)."""
    inbox = harness.inbox
    ready = await inbox.chat_hello(None, email=email)
    await inbox.chat_connected(ready.session)
    ticket = (await inbox.chat_message(ready.session, "hello?")).ticket
    assert ticket
    await inbox.chat_disconnected(ready.session)
    await trio.sleep(11)  # offline after the 10 s grace
    return ready.session, ticket


ACCOUNT = Account(
    name="Acme",
    organization_prefix="Acme",
    timezone="America/New_York",
    support_email="support@acme.example",
    sms_sender="+15550001111",
    public_url="https://support.acme.example",
)
