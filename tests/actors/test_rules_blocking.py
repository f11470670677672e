"""R15 under concurrency: a block that comes while a ticket is opening. The profile
commits `blocked` and answers the tickets to close while an inbound message is on its way
to a ticket that is new or closed; a ticket must not open (or stay open) on a blocked
profile, whichever comes first, and the message is stored once. A store that holds one
chosen read or commit until the test lets it go makes each interleaving happen exactly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from tests.actors.helpers import PHONE, Harness
from tidings.actors import invariants
from tidings.actors.errors import InboxError
from tidings.actors.model import Message
from tidings.actors.profile import ProfileActor
from tidings.engine import Batch
from tidings.engine.store.memory import MemoryStore


class HeldStore(MemoryStore):
    """A memory store that, once `hold_read` or `hold_commit` is set, holds the first read
    of a key (commit of a batch) it matches until `release` is set; `reached` is set
    when it is held."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_read: Callable[[str], bool] | None = None
        self.hold_commit: Callable[[Batch], bool] | None = None
        self.reached = trio.Event()
        self.release = trio.Event()

    async def get(self, key: str) -> bytes | None:
        if self.hold_read is not None and self.hold_read(key):
            self.hold_read = None
            self.reached.set()
            await self.release.wait()
        return await super().get(key)

    async def commit(self, batch: Batch) -> list[int]:
        if self.hold_commit is not None and self.hold_commit(batch):
            self.hold_commit = None
            self.reached.set()
            await self.release.wait()
        return await super().commit(batch)


@pytest.fixture
def store() -> HeldStore:
    return HeldStore()


def opening_a_ticket(batch: Batch) -> bool:
    return any(key.startswith("ticket:") for key in batch.puts)


def reading_a_message(key: str) -> bool:
    return key.startswith("msg:")


async def block_while_held(
    harness: Harness, store: HeldStore, profile: str, deliver: Callable[[], Awaitable[Message]],
    meanwhile: Callable[[], None] = lambda: None,
) -> Message:  # fmt: skip
    """Start `deliver`; once `store` holds it, call `meanwhile()` and block `profile`;
    then let it go. Returns what `deliver` answered, after the block finished."""
    got: list[Message] = []
    blocked = trio.Event()

    async def delivering() -> None:
        got.append(await deliver())

    async def blocking() -> None:
        await harness.inbox.profile_block(profile)
        blocked.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(delivering)
        await store.reached.wait()
        meanwhile()
        nursery.start_soon(blocking)
        await trio.sleep(1)  # the block runs as far as it can while the delivery is held
        store.release.set()
    assert blocked.is_set()
    return got[0]


async def assert_consistent(harness: Harness, profile: str) -> None:
    """No open or snoozed ticket on the blocked profile, nothing counted, store clean."""
    await trio.sleep(1)  # the tickets' flags reach the profile
    live = [
        t for s in ("open", "snoozed") for t in (await harness.inbox.tickets_list(state=s)).tickets
    ]
    assert [t.id for t in live if t.profile == profile] == []
    assert harness.inbox.badge_get() == 0
    assert await invariants.check(harness.store) == []


async def test_r15_a_block_after_the_ticket_was_allowed_to_open_closes_it(
    harness: Harness, store: HeldStore, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    store.hold_commit = opening_a_ticket  # the new SMS ticket's first commit
    message = await block_while_held(
        harness, store, profile, lambda: inbox.receive_sms("SM1", PHONE, "hi")
    )
    assert message.ticket is not None  # it opened before the block, and the block closed it
    assert (await inbox.ticket_get(message.ticket)).ticket.state == "closed"
    await assert_consistent(harness, profile)


async def test_r15_a_ticket_opened_with_a_leave_its_restarted_profile_forgot_closes_on_its_flag(
    harness: Harness, store: HeldStore, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    store.hold_commit = opening_a_ticket  # allowed to open; its first commit is held

    def profile_restarted() -> None:  # a fresh profile actor knows no ticket on its way
        actor = inbox.engine._resident[("profile", profile)]
        assert isinstance(actor, ProfileActor) and actor.opening
        actor.opening.clear()

    message = await block_while_held(
        harness, store, profile, lambda: inbox.receive_sms("SM1", PHONE, "hi"), profile_restarted
    )
    assert message.ticket is not None  # it opened; its flag told the blocked profile
    await assert_consistent(harness, profile)
    assert (await inbox.ticket_get(message.ticket)).ticket.state == "closed"


async def closed_sms_ticket(harness: Harness) -> tuple[str, str]:
    """A subscribed profile whose SMS ticket was closed: (profile, ticket)."""
    profile = await harness.subscribed_profile()
    first = await harness.inbox.receive_sms("SM1", PHONE, "hello")
    assert first.ticket is not None
    await harness.inbox.ticket_set_state(first.ticket, "closed")  # the profile lists none now
    return profile, first.ticket


async def assert_stored_by_the_blocked_profile(
    harness: Harness, profile: str, ticket: str, message: Message
) -> None:
    """SM2 was stored once, by the blocked profile (R15), and its ticket stayed closed."""
    assert message.ticket is None
    assert (await harness.inbox.ticket_get(ticket)).ticket.state == "closed"
    again = await harness.inbox.receive_sms("SM2", PHONE, "again")  # the provider's retry
    assert again.id == message.id
    thread = await harness.store.log_tail(f"thread:sms:{profile}", 10)
    assert thread.count(message.id.encode()) == 1


async def test_r15_an_sms_whose_ticket_is_blocked_before_it_opens_is_stored_without_one(
    harness: Harness, store: HeldStore, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    profile, ticket = await closed_sms_ticket(harness)
    since = inbox.last_seq
    store.hold_read = reading_a_message  # the ticket, routed to by the profile, is held
    message = await block_while_held(
        harness, store, profile, lambda: inbox.receive_sms("SM2", PHONE, "again")
    )
    await assert_stored_by_the_blocked_profile(harness, profile, ticket, message)
    told = [e["event"] for e in await harness.events(since)]
    assert "ticket.updated" not in told, told  # nothing reopened, not even for a moment
    await assert_consistent(harness, profile)


async def test_r15_a_chat_message_whose_ticket_is_blocked_before_it_opens_is_kept_by_the_profile(
    harness: Harness, store: HeldStore, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    ready = await inbox.chat_hello(None, identity=("phone", PHONE))
    store.hold_read = reading_a_message  # the new ticket, after the profile said "not blocked"
    message = await block_while_held(
        harness,
        store,
        ready.profile,
        lambda: inbox.chat_message(ready.session, "hi", client_id="c1"),
    )
    assert message.ticket is None
    kept = await store.log_tail(f"thread:webchat-blocked:{ready.profile}", 10)
    assert kept == [message.id.encode()]
    resent = await inbox.chat_message(ready.session, "hi", client_id="c1")
    assert resent.id == message.id  # the widget's resend stores nothing new (R30)
    assert (await inbox.tickets_list(channel="webchat")).tickets == []
    await assert_consistent(harness, ready.profile)


async def test_r15_an_agent_cannot_reopen_a_blocked_profiles_ticket(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    ticket = (await inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket is not None
    await inbox.profile_block(profile)
    with pytest.raises(InboxError) as refused:
        await inbox.ticket_set_state(ticket, "open")
    assert refused.value.code == "blocked"
    assert (await inbox.ticket_get(ticket)).ticket.state == "closed"
    await inbox.profile_block(profile, blocked=False)
    assert (await inbox.ticket_set_state(ticket, "open")).state == "open"


async def test_r15_a_block_whose_asker_goes_away_still_closes_the_tickets(
    harness: Harness, store: HeldStore, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    ticket = (await inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket is not None
    await trio.sleep(1)  # the profile knows its ticket
    store.hold_commit = lambda batch: f"profile:{profile}" in batch.puts  # the block's commit
    with trio.move_on_after(1):  # the agent's connection closes while the block commits
        await inbox.profile_block(profile)
    assert store.reached.is_set()
    store.release.set()
    await trio.sleep(1)
    assert (await inbox.ticket_get(ticket)).ticket.state == "closed"
    await assert_consistent(harness, profile)


def reading_the_idempotency_key(key: str) -> bool:
    return key.startswith("idem:sms:")


def claiming_the_idempotency_key(batch: Batch) -> bool:
    return any(key.startswith("idem:sms:") for key in batch.claims)


async def test_r15_an_sms_on_the_route_to_a_closed_ticket_blocked_before_it_reopens(
    harness: Harness, store: HeldStore, autojump_clock: trio.testing.MockClock
) -> None:
    # the ticket's close keeps the profile's route: the next SMS goes straight to the
    # ticket, held at its first read; the block comes before it asks to reopen
    inbox = harness.inbox
    profile, ticket = await closed_sms_ticket(harness)
    await trio.sleep(1)
    assert inbox.app.sms_routes.get(profile) is not None
    store.hold_read = reading_the_idempotency_key
    message = await block_while_held(
        harness, store, profile, lambda: inbox.receive_sms("SM2", PHONE, "again")
    )
    await assert_stored_by_the_blocked_profile(harness, profile, ticket, message)
    await assert_consistent(harness, profile)


async def test_r15_an_sms_on_the_route_to_an_open_ticket_held_while_a_block_comes(
    harness: Harness, store: HeldStore, autojump_clock: trio.testing.MockClock
) -> None:
    # it reached the open ticket before the block's close did: stored in the ticket,
    # which the block then closes
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    first = await inbox.receive_sms("SM1", PHONE, "hello")
    assert first.ticket is not None
    store.hold_commit = claiming_the_idempotency_key  # its one write: no read before it
    message = await block_while_held(
        harness, store, profile, lambda: inbox.receive_sms("SM2", PHONE, "again")
    )
    assert message.ticket == first.ticket
    assert (await inbox.ticket_get(first.ticket)).ticket.state == "closed"
    await assert_consistent(harness, profile)
