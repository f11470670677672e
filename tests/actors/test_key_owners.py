"""Each key family has one owner (actors/context.py, "Who owns which key"): the directory
writes phone and e-mail mappings, a message's owner its status and jobs, and the profile
checks consent and blocking for replies, in PROTOCOL.md's error order."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.actors.helpers import PHONE, Harness
from tidings.actors.errors import InboxError

Clock = trio.testing.MockClock
OTHER_PHONE = "+15559990000"


async def test_r02_a_profile_giving_up_a_number_leaves_it_to_the_profile_that_took_it(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    a = (await inbox.upsert_profile({"phone": PHONE})).id
    await inbox.upsert_profile({"id": "b", "phone": PHONE})  # B takes the number
    await inbox.upsert_profile({"id": a, "phone": OTHER_PHONE})  # A lets go of it late
    assert await harness.store.get(f"phone:{PHONE}") == b"b"
    assert await harness.store.get(f"phone:{OTHER_PHONE}") == a.encode()
    assert (await inbox.receive_sms("SM1", PHONE, "hi")).profile == "b"
    await inbox.upsert_profile({"id": a, "phone": None})  # gives up its own: unmapped
    assert await harness.store.get(f"phone:{OTHER_PHONE}") is None


async def test_an_email_changed_only_in_case_keeps_its_profile(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ann = (await inbox.upsert_profile({"email": "Ann@Example.com"})).id
    await inbox.upsert_profile({"id": ann, "email": "ann@example.com"})
    assert await harness.store.get("email:ann@example.com") == ann.encode()
    assert (await inbox.upsert_profile({"email": "ANN@example.com", "name": "Ann"})).id == ann


async def test_r21_the_ticket_that_queued_an_email_removes_its_job_once_sent(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    await inbox.settings_update(
        {"notifications": {"new_ticket_email": {"enabled": True, "recipients": ["a@x.example"]}}}
    )
    await inbox.receive_sms("SM1", PHONE, "hello")
    await trio.sleep(1)  # told after the commit: no wait for the courier's next round
    assert [m.subject for m in harness.mail.sent] == [f"New SMS ticket from {PHONE}"]
    assert await harness.store.index_query("outbox", frozenset(), 10, descending=False) == []


async def test_r04_r15_reply_refusals_come_in_the_protocol_order(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    ticket = (await inbox.receive_sms("SM1", PHONE, "hello")).ticket  # no consent
    assert ticket
    profile = (await inbox.ticket_get(ticket)).profile.id

    async def refusal(body: str = "hi") -> str:
        with pytest.raises(InboxError) as caught:
            await inbox.ticket_reply(ticket, body, author="a1")
        return caught.value.code

    assert await refusal() == "not_subscribed"
    await inbox.ticket_set_state(ticket, "closed")
    assert await refusal() == "ticket_closed"  # before not_subscribed
    await inbox.profile_block(profile)
    assert await refusal() == "blocked"  # before ticket_closed
    assert await refusal("  ") == "bad_request"  # before blocked
