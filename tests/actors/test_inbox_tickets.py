"""Tickets, threads, states and the badge: rules R01–R15, R18, R24 and R28."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.actors.helpers import PHONE, Harness
from tidings.actors import thread
from tidings.actors.errors import InboxError


async def test_r02_inbound_sms_opens_one_ticket_and_one_thread_across_reopens(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    first = await inbox.receive_sms("SM1", PHONE, "hello")
    ticket = first.ticket
    assert ticket is not None
    await inbox.ticket_set_state(ticket, "closed")
    second = await inbox.receive_sms("SM2", PHONE, "me again")
    assert second.ticket == ticket  # reopened, not a new one
    found = await inbox.ticket_get(ticket)
    assert found.ticket.state == "open" and found.ticket.unread
    bodies = [m.body for m in found.messages if m.direction == "inbound"]
    assert bodies == ["hello", "me again"]
    page = await inbox.tickets_list(channel="sms")
    assert [t.id for t in page.tickets] == [ticket]


async def test_r02_inbound_sms_wakes_a_snoozed_ticket(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    ticket = (await inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket
    await inbox.ticket_set_state(ticket, "snoozed", "tomorrow")
    await inbox.receive_sms("SM2", PHONE, "still there?")
    found = (await inbox.ticket_get(ticket)).ticket
    assert found.state == "open" and found.snoozed_until is None


async def test_r03_brand_cannot_reply_without_a_ticket_the_customer_started(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(InboxError) as caught:
        await harness.inbox.ticket_reply("t-does-not-exist", "hi")
    assert caught.value.code == "not_found"


async def test_r04_sms_reply_needs_consent(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    ticket = (await inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket
    with pytest.raises(InboxError) as caught:
        await inbox.ticket_reply(ticket, "hi", author="a1")
    assert caught.value.code == "not_subscribed"
    await harness.subscribed_profile()
    reply = await inbox.ticket_reply(ticket, "hi", author="a1")
    assert reply.status == "queued" and reply.kind == "support"


async def test_r01_r06_r07_web_chat_tickets_are_per_session_and_never_reopen(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    sms_ticket = (await inbox.receive_sms("SM1", PHONE, "sms")).ticket
    ready = await inbox.chat_hello(None, identity=("phone", PHONE))
    assert ready.ticket is None
    first = await inbox.chat_message(ready.session, "chat one")
    assert first.ticket and first.ticket != sms_ticket  # R06: separate tickets
    again = await inbox.chat_message(ready.session, "chat two")
    assert again.ticket == first.ticket  # still open: same ticket (R01)
    await inbox.ticket_set_state(first.ticket, "closed")
    with pytest.raises(InboxError) as caught:
        await inbox.ticket_set_state(first.ticket, "open")
    assert caught.value.code == "cannot_reopen"
    after = await inbox.chat_message(ready.session, "back")
    assert after.ticket not in (first.ticket, None)  # R07: a new ticket
    other = await inbox.chat_hello(None, identity=("phone", PHONE))
    third = await inbox.chat_message(other.session, "other tab")
    assert third.ticket not in (first.ticket, after.ticket)
    assert first.profile == after.profile == third.profile  # one profile, many chats


async def test_r08_list_newest_activity_first_with_unread_marker(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    a = (await inbox.receive_sms("SM1", "+15550000001", "a")).ticket
    await trio.sleep(1)
    b = (await inbox.receive_sms("SM2", "+15550000002", "b")).ticket
    await trio.sleep(1)
    await inbox.receive_sms("SM3", "+15550000001", "a again")
    await inbox.ticket_mark(b, read=True)  # type: ignore[arg-type]
    page = await inbox.tickets_list()
    assert [(t.id, t.unread) for t in page.tickets] == [(a, True), (b, False)]


async def test_r09_r10_ticket_shows_last_50_messages_without_inbound_media(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    await harness.subscribed_profile()
    first = await inbox.receive_sms("SM0", PHONE, "first", ["https://img/x.jpg"])
    ticket = first.ticket
    assert ticket and first.media == []  # inbound media is never shown (R10)
    for i in range(1, 60):
        await inbox.receive_sms(f"SM{i}", PHONE, f"m{i}")
    await inbox.ticket_reply(ticket, "look", media=["https://cdn/pic.png"], author="a1")
    found = await inbox.ticket_get(ticket)
    assert len(found.messages) == 50
    assert found.messages[-1].media == ["https://cdn/pic.png"]  # outbound images shown
    assert all(m.media == [] for m in found.messages if m.direction == "inbound")
    assert found.profile.subscribed and found.profile.phone == PHONE
    assert first.id not in {m.id for m in found.messages}  # older than the last 50
    kept = await thread.load(harness.store, first.id)  # but kept, its media with it (R10)
    assert kept is not None and kept.message.body == "first" and kept.message.media == []
    assert kept.inbound_media == ["https://img/x.jpg"]


async def test_r12_r13_snooze_presets_wake_the_ticket_open_and_unread(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    ticket = (await inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket
    await inbox.ticket_mark(ticket, read=True)
    snoozed = await inbox.ticket_set_state(ticket, "snoozed", "tomorrow")
    # Wednesday 10:00 New York → Thursday 09:00 New York = 14:00 UTC
    assert snoozed.snoozed_until == "2027-01-14T14:00:00.000000+00:00"
    assert snoozed.state == "snoozed" and snoozed.unread is False  # snoozing keeps read
    assert inbox.badge_get() == 0
    since = inbox.last_seq
    await trio.sleep(23 * 3600 - 60)
    assert (await inbox.ticket_get(ticket)).ticket.state == "snoozed"
    await trio.sleep(61)
    woken = (await inbox.ticket_get(ticket)).ticket
    assert (woken.state, woken.unread, woken.snoozed_until) == ("open", True, None)
    events = [e["event"] for e in await harness.events(since)]
    assert "ticket.updated" in events and "badge" in events  # agents are told
    assert inbox.badge_get() == 1


async def test_r13_snooze_in_the_past_is_a_bad_request(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    ticket = (await harness.inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket
    with pytest.raises(InboxError) as caught:
        await harness.inbox.ticket_set_state(ticket, "snoozed", "2020-01-01T00:00:00+00:00")
    assert caught.value.code == "bad_request" and caught.value.detail.startswith("until")


ABSURD_UNTIL = [
    "9999-12-31T23:59:59-14:00",  # past year 9999 once in UTC: astimezone overflowed
    "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
    "9000-12-31T23:59:59-14:00",  # representable, but past the years the server computes with
    "2024-01-01T00:00:00+99:00",  # no such offset
    "nan",
    "1" * 400,
]


@pytest.mark.parametrize("until", ABSURD_UNTIL)
async def test_r13_an_until_the_server_cannot_compute_with_is_refused_before_the_actor(
    harness: Harness, autojump_clock: trio.testing.MockClock, until: str
) -> None:
    ticket = (await harness.inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket
    for _ in range(20):  # more than the actor's restart intensity would survive
        with pytest.raises(InboxError) as caught:
            await harness.inbox.ticket_set_state(ticket, "snoozed", until)
        assert caught.value.code == "bad_request" and caught.value.detail.startswith("until: ")
    with pytest.raises(InboxError) as missing:
        await harness.inbox.ticket_set_state("t-none", "snoozed", until)
    assert missing.value.code == "not_found"  # reported before bad_request
    later = await harness.inbox.ticket_set_state(ticket, "snoozed", "later_today")
    assert later.state == "snoozed"  # the ticket actor is alive and unharmed


async def test_r13_next_week_and_later_today(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    ticket = (await harness.inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket
    later = await harness.inbox.ticket_set_state(ticket, "snoozed", "later_today")
    assert later.snoozed_until == "2027-01-13T18:00:00.000000+00:00"
    week = await harness.inbox.ticket_set_state(ticket, "snoozed", "next_week")
    assert week.snoozed_until == "2027-01-18T14:00:00.000000+00:00"  # Monday 09:00 NY


async def test_r14_closed_sms_ticket_reopens_by_the_agent(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    ticket = (await harness.inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket
    await harness.inbox.ticket_set_state(ticket, "closed")
    reopened = await harness.inbox.ticket_set_state(ticket, "open")
    assert reopened.state == "open"


async def test_r15_blocking_closes_tickets_and_silences_new_messages(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    ticket = (await inbox.receive_sms("SM1", PHONE, "hello")).ticket
    assert ticket
    profile = (await inbox.ticket_get(ticket)).profile.id
    assert inbox.badge_get() == 1
    blocked = await inbox.profile_block(profile)
    assert blocked.blocked
    assert (await inbox.ticket_get(ticket)).ticket.state == "closed"
    await trio.sleep(1)
    assert inbox.badge_get() == 0
    since = inbox.last_seq
    stored = await inbox.receive_sms("SM2", PHONE, "are you there")
    assert stored.ticket is None
    await trio.sleep(1)
    assert (await inbox.ticket_get(ticket)).ticket.state == "closed"
    assert inbox.badge_get() == 0
    events = [e["event"] for e in await harness.events(since)]
    assert events == ["message.created"]  # stored, nothing else
    await inbox.profile_block(profile, blocked=False)
    await inbox.receive_sms("SM3", PHONE, "unblocked now")
    assert (await inbox.ticket_get(ticket)).ticket.state == "open"


async def test_r15_a_blocked_profiles_web_chat_message_is_stored_by_the_profile_once(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    ready = await inbox.chat_hello(None, identity=("phone", PHONE))
    await inbox.profile_block(ready.profile)
    since = inbox.last_seq
    first = await inbox.chat_message(ready.session, "let me in", client_id="c1")
    again = await inbox.chat_message(ready.session, "let me in", client_id="c1")
    assert first.ticket is None
    assert again.id == first.id  # the widget's resend stores nothing new (R30)
    kept = await harness.store.log_tail(f"thread:webchat-blocked:{ready.profile}", 10)
    assert kept == [first.id.encode()]
    assert (await inbox.tickets_list(channel="webchat")).tickets == []
    told = [e["event"] for e in await harness.events(since)]
    assert not [e for e in told if e.startswith(("message.", "ticket."))], told  # nobody is told


async def test_r18_badge_counts_profiles_not_messages(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    await inbox.receive_sms("SM1", "+15550000001", "a")
    await inbox.receive_sms("SM2", "+15550000001", "a2")
    ready = await inbox.chat_hello(None, identity=("phone", "+15550000001"))
    await inbox.chat_message(ready.session, "chat too")
    await inbox.receive_sms("SM3", "+15550000002", "b")
    await trio.sleep(1)
    assert inbox.badge_get() == 2


async def test_r24_filters_by_state_unread_channel(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    s1 = (await inbox.receive_sms("SM1", "+15550000001", "a")).ticket
    s2 = (await inbox.receive_sms("SM2", "+15550000002", "b")).ticket
    ready = await inbox.chat_hello(None)
    w1 = (await inbox.chat_message(ready.session, "web")).ticket
    await inbox.ticket_set_state(s2, "closed")  # type: ignore[arg-type]
    await inbox.ticket_mark(w1, read=True)  # type: ignore[arg-type]
    ids = lambda page: {t.id for t in page.tickets}  # noqa: E731
    assert ids(await inbox.tickets_list(state="open")) == {s1, w1}
    assert ids(await inbox.tickets_list(state="closed")) == {s2}
    assert ids(await inbox.tickets_list(unread=True)) == {s1, s2}
    assert ids(await inbox.tickets_list(channel="webchat")) == {w1}
    with pytest.raises(InboxError) as caught:
        await inbox.tickets_list(state="archived")
    assert caught.value.code == "bad_request" and caught.value.detail.startswith("state")


async def test_r24_list_pages_with_a_cursor(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    for i in range(7):
        await inbox.receive_sms(f"SM{i}", f"+1555000000{i}", "x")
        await trio.sleep(1)
    seen: list[str] = []
    cursor = None
    while True:
        page = await inbox.tickets_list(limit=3, cursor=cursor)
        seen += [t.id for t in page.tickets]
        cursor = page.cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7


async def test_r28_first_response_time_and_longest_waiting_first(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    await harness.subscribed_profile("+15550000001")
    a = (await inbox.receive_sms("SM1", "+15550000001", "a")).ticket
    await trio.sleep(600)
    b = (await inbox.receive_sms("SM2", "+15550000002", "b")).ticket
    await trio.sleep(60)
    await inbox.receive_sms("SM3", "+15550000001", "a again")  # waiting since the first
    waiting = await inbox.tickets_list(order="waiting")
    assert [t.id for t in waiting.tickets] == [a, b]
    reply = await inbox.ticket_reply(a, "sorry for the wait", author="a1")  # type: ignore[arg-type]
    assert reply.ticket == a
    found = (await inbox.ticket_get(a)).ticket  # type: ignore[arg-type]
    assert found.first_response_s == pytest.approx(660)
    assert [t.id for t in (await inbox.tickets_list(order="waiting")).tickets] == [b]


async def test_r30_repeated_message_sid_is_stored_once(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    first = await inbox.receive_sms("SMdup", PHONE, "hello")
    again = await inbox.receive_sms("SMdup", PHONE, "hello")
    assert again.id == first.id
    found = await inbox.ticket_get(first.ticket)  # type: ignore[arg-type]
    assert [m.body for m in found.messages if m.direction == "inbound"] == ["hello"]


async def test_r30_delivery_status_never_moves_backwards(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    await harness.subscribed_profile()
    ticket = (await inbox.receive_sms("SM1", PHONE, "hi")).ticket
    reply = await inbox.ticket_reply(ticket, "hello", author="a1")  # type: ignore[arg-type]
    await trio.sleep(1)
    provider_id = harness.sms.receipt(reply.id).provider_id  # type: ignore[union-attr]
    await inbox.sms_status(provider_id, "delivered")
    await inbox.sms_status(provider_id, "sent")  # late and out of order: ignored
    await inbox.sms_status("unknown-id", "failed")  # unknown: ignored
    messages = (await inbox.ticket_get(ticket)).messages  # type: ignore[arg-type]
    assert [m.status for m in messages if m.id == reply.id] == ["delivered"]


async def test_r02_a_phone_number_moved_to_another_profile_routes_its_sms_there(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    first = await inbox.receive_sms("SM1", PHONE, "hello")  # makes profile A for PHONE
    a = first.profile
    await inbox.upsert_profile({"id": a, "phone": "+15559990000"})  # A takes another number
    b = (await inbox.upsert_profile({"id": "b", "phone": PHONE})).id  # B takes PHONE
    again = await inbox.receive_sms("SM2", PHONE, "hello again")
    assert again.profile == b != a
    moved = await inbox.receive_sms("SM3", "+15559990000", "from A's new number")
    assert moved.profile == a


async def test_r30_a_retry_arriving_while_the_first_delivery_is_in_flight_stores_once(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    await inbox.receive_sms("SM0", PHONE, "first")  # the ticket exists
    got: list[str] = []

    async def deliver() -> None:
        got.append((await inbox.receive_sms("SMx", PHONE, "twice")).id)

    async with trio.open_nursery() as nursery:  # the provider retries before the first answer
        for _ in range(3):
            nursery.start_soon(deliver)
    assert len(set(got)) == 1
    view = await inbox.ticket_get((await inbox.tickets_list()).tickets[0].id)
    assert [m.body for m in view.messages if m.direction == "inbound"] == ["first", "twice"]
    # and once the profile is passivated, the stored idempotency key still answers
    await trio.sleep(300)
    assert (await inbox.receive_sms("SMx", PHONE, "twice")).id == got[0]


async def test_a_snooze_time_no_calendar_holds_is_a_bad_request_and_the_ticket_goes_on(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox = harness.inbox
    ticket = (await inbox.receive_sms("SM-until", PHONE, "hello")).ticket
    assert ticket is not None
    for _ in range(30):  # more than the restart intensity, were it to reach the ticket
        with pytest.raises(InboxError) as refused:
            await inbox.ticket_set_state(ticket, "snoozed", "9999-12-31T23:59:59-14:00")
        assert refused.value.code == "bad_request"
    assert inbox.engine.restarts == 0 and inbox.engine.quarantined == 0
    assert (await inbox.ticket_set_state(ticket, "snoozed", "tomorrow")).state == "snoozed"
