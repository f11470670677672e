"""Crash invariants (`actors/invariants.py`): each check finds the state a crash between
two actors' commits leaves, and `open_inbox` repairs on start what it reconciles
(badge, blocked profiles, web chat sessions, timers, presence for R16)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgspec
import trio
import trio.testing

from tests.actors.helpers import ACCOUNT, PHONE, START
from tidings.actors import invariants
from tidings.actors.brand import Timing
from tidings.actors.inbox import Inbox, open_inbox
from tidings.actors.profile import BADGE, ProfileState
from tidings.actors.ticket import Wake
from tidings.engine import Batch, TrioWallClock
from tidings.engine.store.memory import MemoryStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

TIMING = Timing(followup_delay_s=60.0, offline_grace_s=10.0, idle_timeout_s=30.0)


@asynccontextmanager
async def inbox_on(
    store: MemoryStore, clock: TrioWallClock, mail: OutboxMail | None = None
) -> AsyncIterator[Inbox]:
    async with open_inbox(
        store,
        account=ACCOUNT,
        timing=TIMING,
        sms=OutboxSms(),
        mail=mail or OutboxMail(),
        clock=clock,
    ) as inbox:
        yield inbox


async def kinds(store: MemoryStore) -> list[str]:
    return [v.kind for v in await invariants.check(store)]


async def sms_ticket(inbox: Inbox, sid: str = "SM1", phone: str = PHONE) -> tuple[str, str]:
    """(profile, ticket) of an inbound SMS from a subscribed profile."""
    profile = await inbox.upsert_profile(
        {"phone": phone, "consent": {"marketing": False, "transactional": True}}
    )
    message = await inbox.receive_sms(sid, phone, "hello")
    assert message.ticket is not None
    return profile.id, message.ticket


async def put_profile(store: MemoryStore, profile: str, change: dict[str, object]) -> None:
    """Write a profile's record behind its actor's back (what a crash leaves)."""
    raw = await store.get(f"profile:{profile}")
    assert raw is not None
    state = msgspec.json.decode(raw, type=ProfileState)
    for name, value in change.items():
        setattr(state.profile, name, value)
    batch = Batch()
    batch.put(f"profile:{profile}", msgspec.json.encode(state))
    await store.commit(batch)


async def test_a_store_written_by_the_inbox_is_consistent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = MemoryStore(), TrioWallClock(START)
    async with inbox_on(store, clock) as inbox:
        _, first = await sms_ticket(inbox)
        await inbox.ticket_set_state(first, "snoozed", "tomorrow")
        blocked, _ = await sms_ticket(inbox, "SM2", "+15550009999")
        await inbox.profile_block(blocked)
        ready = await inbox.chat_hello(None, email="v@example.com")
        await inbox.chat_message(ready.session, "hi")
    assert await invariants.check(store) == []


async def test_r18_a_ticket_whose_profile_was_not_told_breaks_the_badge_until_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = MemoryStore(), TrioWallClock(START)
    async with inbox_on(store, clock) as inbox:
        profile, ticket = await sms_ticket(inbox)
    batch = Batch()  # the ticket committed, the crash came before its profile's turn
    batch.unindex(BADGE, profile)
    batch.put(f"profile:{profile}", msgspec.json.encode(ProfileState(
        msgspec.json.decode(await store.get(f"profile:{profile}") or b"", type=ProfileState).profile
    )))  # fmt: skip
    await store.commit(batch)
    found = await invariants.check(store)
    assert [(v.kind, v.keys) for v in found] == [
        ("badge", (f"profile:{profile}", f"ticket:{ticket}")),
        ("profile_tickets", (f"profile:{profile}", f"ticket:{ticket}")),
    ]
    assert found[1].detail == "the profile lists the ticket as closed; it is open, unread"
    assert found[0].line().startswith("badge: has an open unread ticket")
    async with inbox_on(store, clock) as inbox:
        assert inbox.badge_get() == 1
    assert await invariants.check(store) == []


async def test_r15_open_tickets_of_a_blocked_profile_are_closed_on_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = MemoryStore(), TrioWallClock(START)
    async with inbox_on(store, clock) as inbox:
        profile, ticket = await sms_ticket(inbox)
    await put_profile(store, profile, {"blocked": True})  # committed, then the crash
    assert set(await kinds(store)) == {"blocked_open"}
    async with inbox_on(store, clock) as inbox:
        assert (await inbox.ticket_get(ticket)).ticket.state == "closed"
        assert inbox.badge_get() == 0
    assert await invariants.check(store) == []


async def test_r13_a_timer_without_its_snooze_is_dropped_and_a_lost_one_is_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = MemoryStore(), TrioWallClock(START)
    async with inbox_on(store, clock) as inbox:
        _, ticket = await sms_ticket(inbox)
        engine = inbox.engine
        batch = Batch()  # a wake-up for a ticket that is open: no purpose
        engine.timers.set_durable(
            batch, f"snooze:{ticket}", START + 86400, ("ticket", ticket), Wake(START + 86400)
        )
        await engine.commit(batch)
    assert await kinds(store) == ["timer_orphan"]
    async with inbox_on(store, clock) as inbox:
        assert await invariants.check(store) == []
        await inbox.ticket_set_state(ticket, "snoozed", "next_week")
    batch = Batch()
    batch.cancel_timer(f"snooze:{ticket}")
    await store.commit(batch)
    assert await kinds(store) == ["snooze_lost"]


async def test_outbox_jobs_without_their_message_and_event_gaps_are_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    batch = Batch()
    batch.put(
        "outbox:m1",
        b'{"type":"sms","message":"m1","profile":"p1","to":"+1","sender":"+1","body":"","media":[]}',
    )
    batch.index("outbox", "m1", START, frozenset())
    batch.event(b"{}")
    batch.event(b"{}")
    await store.commit(batch)
    found = await invariants.check(store)
    assert [(v.kind, v.keys) for v in found] == [("outbox_orphan", ("outbox:m1", "msg:m1"))]
    skips_2 = _Altered(store, lambda rows: [(s if s < 2 else s + 1, e) for s, e in rows], more=1)
    assert [v.kind for v in await invariants.event_gaps(skips_2)] == ["event_gap"]


Rows = list[tuple[int, bytes]]


class _Altered(MemoryStore):
    """`inner`'s event log seen through `alter`, with `more` numbers at its end."""

    def __init__(self, inner: MemoryStore, alter: Callable[[Rows], Rows], more: int = 0) -> None:
        super().__init__()
        self.inner, self.alter, self.more = inner, alter, more

    async def events_since(self, seq: int, limit: int) -> Rows:
        return self.alter(await self.inner.events_since(seq, limit))

    async def last_event_seq(self) -> int:
        return await self.inner.last_event_seq() + self.more

    async def first_event_seq(self) -> int:
        return await self.inner.first_event_seq()


async def test_r07_a_session_left_with_two_open_tickets_keeps_the_one_its_visitor_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = MemoryStore(), TrioWallClock(START)
    async with inbox_on(store, clock) as inbox:
        ready = await inbox.chat_hello(None, email="v@example.com")
        kept = (await inbox.chat_message(ready.session, "first")).ticket
        session_raw = await store.get(f"session:{ready.session}")
        await inbox.ticket_set_state(kept or "", "closed")
        orphan = (await inbox.chat_message(ready.session, "second")).ticket
    # the second ticket committed, the visitor's record did not: it still names the first
    batch = Batch()
    batch.put(f"session:{ready.session}", session_raw or b"")
    await store.commit(batch)
    raw = await store.get(f"ticket:{kept}")
    assert raw is not None
    reopened = msgspec.json.decode(raw)
    reopened["ticket"]["state"] = "open"
    batch = Batch()
    batch.put(f"ticket:{kept}", msgspec.json.encode(reopened))
    batch.index(
        "tickets", kept or "", START, frozenset({"state=open", "unread=0", "channel=webchat"})
    )
    await store.commit(batch)
    found = [v for v in await invariants.check(store) if v.kind == "session_tickets"]
    assert found and found[0].keys == (
        f"session:{ready.session}",
        *sorted((f"ticket:{kept}", f"ticket:{orphan}")),
    )
    async with inbox_on(store, clock) as inbox:
        assert (await inbox.ticket_get(orphan or "")).ticket.state == "closed"
        assert (await inbox.ticket_get(kept or "")).ticket.state == "open"
    assert [v for v in await invariants.check(store) if v.kind == "session_tickets"] == []


async def test_r16_a_visitor_that_does_not_come_back_after_a_restart_counts_as_offline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock, mail = MemoryStore(), TrioWallClock(START), OutboxMail()
    async with inbox_on(store, clock) as inbox:
        ready = await inbox.chat_hello(None, email="v@example.com")
        await inbox.chat_connected(ready.session)
        ticket = (await inbox.chat_message(ready.session, "anyone?")).ticket or ""
        assert (await inbox.ticket_get(ticket)).ticket.visitor_online is True
    async with inbox_on(store, clock, mail) as inbox:
        assert (await inbox.ticket_get(ticket)).ticket.visitor_online is True
        await trio.sleep(TIMING.offline_grace_s + 1)
        assert (await inbox.ticket_get(ticket)).ticket.visitor_online is False
        await inbox.ticket_reply(ticket, "Here now", author="a1")
        assert (await inbox.ticket_get(ticket)).ticket.followup is not None
        await trio.sleep(TIMING.followup_delay_s + 1)
        assert (await inbox.ticket_get(ticket)).ticket.followup.status == "sent"  # type: ignore[union-attr]
    assert await invariants.check(store) == []


async def test_r16_a_visitor_that_reconnects_within_the_grace_stays_online(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = MemoryStore(), TrioWallClock(START)
    async with inbox_on(store, clock) as inbox:
        ready = await inbox.chat_hello(None, email="v@example.com")
        await inbox.chat_connected(ready.session)
        ticket = (await inbox.chat_message(ready.session, "anyone?")).ticket or ""
    async with inbox_on(store, clock) as inbox:
        await trio.sleep(TIMING.offline_grace_s / 2)
        await inbox.chat_hello(ready.session)
        await inbox.chat_connected(ready.session)
        await trio.sleep(TIMING.offline_grace_s)
        assert (await inbox.ticket_get(ticket)).ticket.visitor_online is True


async def test_r13_a_snooze_that_fell_due_while_the_server_was_down_wakes_on_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = MemoryStore(), TrioWallClock(START)
    async with inbox_on(store, clock) as inbox:
        _, ticket = await sms_ticket(inbox)
        await inbox.ticket_set_state(ticket, "snoozed", "later_today")
    await trio.sleep(4 * 3600)  # down past the wake-up time
    async with inbox_on(store, clock) as inbox:
        await trio.sleep(1)
        assert (await inbox.ticket_get(ticket)).ticket.state == "open"
    assert await invariants.check(store) == []


async def test_event_gap_holds_above_oldest_after_retention_drops_a_prefix() -> None:
    store = MemoryStore()
    batch = Batch()
    for i in range(6):
        batch.event(b"e%d" % i)
    await store.commit(batch)
    await store.drop_events(3)  # retention: 1..3 are gone, 4..6 kept
    assert await invariants.event_gaps(store) == []
    lost_5 = _Altered(store, lambda rows: [(s, e) for s, e in rows if s != 5])
    assert [v.kind for v in await invariants.event_gaps(lost_5)] == ["event_gap"]
