"""An inbox on the memory store, with outbox providers and trio's mock clock.

pytest-trio uses a mock clock only when the test itself takes it as an argument, so every
test that takes `harness` also takes `autojump_clock`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio.testing

from tests.actors.helpers import ACCOUNT, START, Harness
from tidings.actors.brand import Timing
from tidings.actors.inbox import open_inbox
from tidings.engine import TrioWallClock
from tidings.engine.store.memory import MemoryStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms


@pytest.fixture
def store() -> MemoryStore:
    """The harness's store (a test module may give a memory store of its own kind)."""
    return MemoryStore()


@pytest.fixture
async def harness(
    store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> AsyncIterator[Harness]:
    sms, mail = OutboxSms(), OutboxMail()
    async with open_inbox(
        store, account=ACCOUNT, timing=Timing(), sms=sms, mail=mail, clock=TrioWallClock(START)
    ) as inbox:
        yield Harness(inbox, sms, mail, store)
