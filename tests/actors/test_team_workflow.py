"""Contract v3, *Team workflow*: assignment, private notes and `Ticket.last_message`
(issue 14 items 1, 2 and 5), and templates whose fields have no value (item 8)."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from tests.actors.helpers import ACCOUNT, PHONE, START, Harness, offline_visitor
from tidings.actors.brand import Timing
from tidings.actors.errors import InboxError
from tidings.actors.inbox import open_inbox
from tidings.actors.model import LastMessage
from tidings.actors.settings import DEFAULT_AUTORESPONDER
from tidings.engine import TrioWallClock
from tidings.engine.store.memory import MemoryStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

Clock = trio.testing.MockClock


async def sms_ticket(harness: Harness, phone: str = PHONE, sid: str = "SM1") -> str:
    await harness.subscribed_profile(phone)
    ticket = (await harness.inbox.receive_sms(sid, phone, "Where is my order?")).ticket
    assert ticket
    await trio.sleep(1)  # the courier has sent the autoresponse
    return ticket


# -- assignment ------------------------------------------------------------------------------


async def test_assign_sets_the_assignee_and_announces_ticket_updated(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ticket = await sms_ticket(harness)
    assert (await inbox.ticket_get(ticket)).ticket.assignee is None
    since = inbox.last_seq
    assigned = await inbox.ticket_assign(ticket, "a1")
    assert assigned.assignee == "a1"
    [event] = await harness.events(since)
    assert event["event"] == "ticket.updated"
    assert event["data"]["ticket"]["id"] == ticket
    assert event["data"]["ticket"]["assignee"] == "a1"
    assert (await inbox.ticket_assign(ticket, None)).assignee is None
    assert (await inbox.ticket_get(ticket)).ticket.assignee is None


async def test_assigning_the_same_agent_again_changes_nothing(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ticket = await sms_ticket(harness)
    await inbox.ticket_assign(ticket, "a1")
    since = inbox.last_seq
    assert (await inbox.ticket_assign(ticket, "a1")).assignee == "a1"
    assert inbox.last_seq == since


async def test_assign_refuses_an_unknown_ticket_then_a_bad_agent(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    with pytest.raises(InboxError) as unknown:
        await inbox.ticket_assign("nope", 5)  # type: ignore[arg-type]
    assert unknown.value.code == "not_found"
    ticket = await sms_ticket(harness)
    for bad in (5, "", "x" * 201):
        with pytest.raises(InboxError) as refused:
            await inbox.ticket_assign(ticket, bad)  # type: ignore[arg-type]
        assert refused.value.code == "bad_request" and refused.value.detail.startswith("agent:")


async def test_assignee_filter_by_agent_and_none(harness: Harness, autojump_clock: Clock) -> None:
    inbox = harness.inbox
    tickets = [await sms_ticket(harness, f"+1555000{i:04d}", f"SM{i}") for i in range(6)]
    await inbox.ticket_assign(tickets[0], "a1")
    await inbox.ticket_assign(tickets[3], "a1")
    await inbox.ticket_assign(tickets[4], "a2")
    mine = await inbox.tickets_list(assignee="a1")
    assert [t.id for t in mine.tickets] == [tickets[3], tickets[0]]  # newest activity first
    theirs = await inbox.tickets_list(assignee="a2", state="open", channel="sms")
    assert [t.id for t in theirs.tickets] == [tickets[4]]
    nobody = await inbox.tickets_list(assignee="none")
    assert [t.id for t in nobody.tickets] == [tickets[5], tickets[2], tickets[1]]
    waiting = await inbox.tickets_list(assignee="a1", order="waiting")
    assert [t.id for t in waiting.tickets] == [tickets[0], tickets[3]]  # longest waiting first
    await inbox.ticket_assign(tickets[0], None)
    assert [t.id for t in (await inbox.tickets_list(assignee="a1")).tickets] == [tickets[3]]
    nobody = await inbox.tickets_list(assignee="none")
    assert [t.id for t in nobody.tickets] == [tickets[5], tickets[2], tickets[1], tickets[0]]


async def test_unassigned_pages_skip_assigned_tickets_without_losing_any(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    tickets = [await sms_ticket(harness, f"+1555000{i:04d}", f"SM{i}") for i in range(9)]
    for ticket in tickets[1::3] + tickets[2::3]:  # two of every three are assigned
        await inbox.ticket_assign(ticket, "a1")
    seen: list[str] = []
    page = await inbox.tickets_list(assignee="none", limit=1)
    while True:
        seen += [t.id for t in page.tickets]
        if page.cursor is None:
            break
        page = await inbox.tickets_list(assignee="none", limit=1, cursor=page.cursor)
    assert seen == [tickets[6], tickets[3], tickets[0]]


async def test_assignee_filter_refuses_a_non_id(harness: Harness, autojump_clock: Clock) -> None:
    with pytest.raises(InboxError) as refused:
        await harness.inbox.tickets_list(assignee="")
    assert refused.value.code == "bad_request" and refused.value.detail.startswith("assignee:")


async def test_replying_to_an_unassigned_ticket_does_not_assign_it(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ticket = await sms_ticket(harness)
    await inbox.ticket_reply(ticket, "On its way", author="a1")
    assert (await inbox.ticket_get(ticket)).ticket.assignee is None
    assert [t.id for t in (await inbox.tickets_list(assignee="none")).tickets] == [ticket]


async def test_the_assignee_survives_a_restart(autojump_clock: Clock) -> None:
    store = MemoryStore()
    for _ in range(2):
        async with open_inbox(
            store, account=ACCOUNT, sms=OutboxSms(), mail=OutboxMail(), clock=TrioWallClock(START)
        ) as inbox:
            page = await inbox.tickets_list(assignee="a1")
            if not page.tickets:
                await inbox.upsert_profile({"phone": PHONE})
                ticket = (await inbox.receive_sms("SM1", PHONE, "hi")).ticket
                assert ticket
                await inbox.ticket_assign(ticket, "a1")
    assert [t.assignee for t in page.tickets] == ["a1"]


# -- private notes ---------------------------------------------------------------------------


async def test_note_shape_and_message_created_event(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ticket = await sms_ticket(harness)
    since = inbox.last_seq
    note = await inbox.ticket_note(ticket, "Customer is a VIP, ship express", author="a1")
    assert (note.kind, note.direction, note.author, note.status) == ("note", "outbound", "a1", None)
    assert (note.ticket, note.channel, note.body) == (
        ticket,
        "sms",
        "Customer is a VIP, ship express",
    )
    assert note.encoding is None and note.segments is None and note.provider_id is None
    events = await harness.events(since)
    assert [e["event"] for e in events] == ["message.created"]
    assert events[0]["data"]["message"]["kind"] == "note"
    thread = (await inbox.ticket_get(ticket)).messages
    assert [m.kind for m in thread] == ["support", "autoresponder", "note"]


async def test_note_is_never_sent_by_sms(harness: Harness, autojump_clock: Clock) -> None:
    inbox = harness.inbox
    ticket = await sms_ticket(harness)
    await trio.sleep(1)
    sent = len(harness.sms.sent)
    note = await inbox.ticket_note(ticket, "see https://example.com/order/1001", author="a1")
    await trio.sleep(60)
    assert len(harness.sms.sent) == sent
    assert note.id not in {s.message_id for s in harness.sms.sent}
    assert note.body == "see https://example.com/order/1001"  # no short link either (R17)
    assert await harness.store.index_count("outbox", frozenset()) == 0


async def test_note_is_allowed_on_a_closed_ticket(harness: Harness, autojump_clock: Clock) -> None:
    inbox = harness.inbox
    ticket = await sms_ticket(harness)
    await inbox.ticket_set_state(ticket, "closed")
    note = await inbox.ticket_note(ticket, "closed: refund issued", author="a1")
    found = await inbox.ticket_get(ticket)
    assert found.ticket.state == "closed"
    assert found.messages[-1].id == note.id


async def test_note_needs_text_and_an_existing_ticket(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    with pytest.raises(InboxError) as unknown:
        await inbox.ticket_note("nope", "", author="a1")
    assert unknown.value.code == "not_found"
    ticket = await sms_ticket(harness)
    for body in ("", "  ", 5):
        with pytest.raises(InboxError) as refused:
            await inbox.ticket_note(ticket, body, author="a1")  # type: ignore[arg-type]
        assert refused.value.code == "bad_request" and refused.value.detail.startswith("body:")


async def test_r28_a_note_is_neither_a_reply_nor_a_first_response(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ticket = await sms_ticket(harness)
    await trio.sleep(30)
    await inbox.ticket_note(ticket, "checking with the warehouse", author="a1")
    found = (await inbox.ticket_get(ticket)).ticket
    assert found.first_response_s is None
    assert [t.id for t in (await inbox.tickets_list(order="waiting")).tickets] == [ticket]
    await trio.sleep(30)
    await inbox.ticket_reply(ticket, "It ships today", author="a1")
    found = (await inbox.ticket_get(ticket)).ticket
    assert found.first_response_s == 61.0  # from the inbound message (1 s + 30 + 30), not the note
    assert (await inbox.tickets_list(order="waiting")).tickets == []


async def test_r16_a_note_schedules_no_followup_and_stays_out_of_it(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    _, ticket = await offline_visitor(harness, "visitor@example.com")
    await inbox.ticket_note(ticket, "PRIVATE: visitor sounds upset", author="a1")
    assert (await inbox.ticket_get(ticket)).ticket.followup is None
    await trio.sleep(600)
    assert not harness.mail.sent  # a note alone sends no follow-up
    await inbox.ticket_reply(ticket, "Sorry for the wait!", author="a1")
    await inbox.ticket_note(ticket, "PRIVATE: offered a coupon", author="a1")
    await trio.sleep(181)
    [email] = harness.mail.sent
    assert "Sorry for the wait!" in email.text and "hello?" in email.text
    assert "PRIVATE" not in email.text and "PRIVATE" not in email.html


async def test_a_note_is_never_pushed_to_the_visitor_nor_shown_on_resume(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ready = await inbox.chat_hello(None, email="visitor@example.com")
    await inbox.chat_connected(ready.session)
    _, frames = inbox.sessions.attach(ready.session)
    ticket = (await inbox.chat_message(ready.session, "hello?")).ticket
    assert ticket
    await inbox.ticket_note(ticket, "PRIVATE: do not share", author="a1")
    reply = await inbox.ticket_reply(ticket, "Hi there", author="a1")
    pushed = []
    while True:
        try:
            pushed.append(frames.receive_nowait())
        except trio.WouldBlock:
            break
    assert [f["message"].id for f in pushed if f["type"] == "message"] == [reply.id]
    resumed = await inbox.chat_hello(ready.session)
    assert [m.body for m in resumed.messages] == ["hello?", "Hi there"]


# -- last_message ----------------------------------------------------------------------------


async def test_last_message_follows_the_thread_but_not_notes(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    await harness.inbox.settings_update({"sms": {"autoresponder": {"mode": "off"}}})
    ticket = await sms_ticket(harness)
    first = (await inbox.ticket_get(ticket)).ticket.last_message
    assert first is not None
    assert (first.body, first.direction, first.kind) == ("Where is my order?", "inbound", "support")
    reply = await inbox.ticket_reply(ticket, "x" * 200, author="a1")
    assert (await inbox.ticket_get(ticket)).ticket.last_message == LastMessage(
        "x" * 140, "outbound", "support", reply.created_at
    )
    await inbox.ticket_note(ticket, "internal only", author="a1")
    listed = (await inbox.tickets_list()).tickets[0]
    assert listed.last_message is not None and listed.last_message.body == "x" * 140


async def test_last_message_is_the_autoresponder_after_an_inbound_sms(
    harness: Harness, autojump_clock: Clock
) -> None:
    ticket = await sms_ticket(harness)
    last = (await harness.inbox.ticket_get(ticket)).ticket.last_message
    assert last is not None and (last.kind, last.direction) == ("autoresponder", "outbound")


# -- templates with missing fields (item 8) --------------------------------------------------


async def test_r20_default_autoresponder_without_a_support_address_leaves_the_email_out(
    autojump_clock: Clock,
) -> None:
    sms = OutboxSms()
    account = dataclasses.replace(ACCOUNT, support_email="")
    async with open_inbox(
        MemoryStore(), account=account, timing=Timing(), sms=sms, mail=OutboxMail(),
        clock=TrioWallClock(START),
    ) as inbox:  # fmt: skip
        assert inbox.settings.sms.autoresponder.text == DEFAULT_AUTORESPONDER
        await inbox.upsert_profile({"phone": PHONE})
        await inbox.receive_sms("SM1", PHONE, "hello")
        await inbox.receive_sms("SM2", PHONE, "HELP")
        await trio.sleep(5)
    assert sorted(s.body for s in sms.sent) == [  # the courier sends them in any order
        "Acme: Msg&data rates may apply. Reply STOP to opt out.",
        "Acme: This inbox isn't monitored. Msg&data rates may apply. Reply STOP to opt out.",
    ]
