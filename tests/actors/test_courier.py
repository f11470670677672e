"""The courier hands outbox jobs to its workers a page at a time (R30): jobs waiting for
a retry round do not hide newer ones, and a backlog longer than a page all goes out,
each SMS once."""

from __future__ import annotations

import trio
import trio.testing

from tests.actors.helpers import Harness
from tidings.actors.courier import PAGE
from tidings.actors.outbound import DeliveryError

STUCK = PAGE + 6  # more old jobs waiting for a retry round than one page of the outbox


async def test_r30_jobs_waiting_for_a_retry_do_not_hold_back_a_new_sms(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox, sms = harness.inbox, harness.sms
    profile = await harness.subscribed_profile()
    sms.fail_next(DeliveryError("provider down", permanent=False), times=STUCK)
    stuck = [
        await inbox.send_message(profile, "campaign", f"c{i}", "Sale", f"offer {i}")
        for i in range(STUCK)
    ]
    await trio.sleep(1)  # each was tried and failed for now: retried in 30 s
    assert not sms.sent
    fresh = await inbox.send_message(profile, "campaign", "new", "Sale", "the new offer")
    await trio.sleep(1)
    assert [s.message_id for s in sms.sent] == [fresh.id]
    await trio.sleep(60)  # the retry round
    sent = [s.message_id for s in sms.sent]
    assert sorted(sent) == sorted([fresh.id, *(m.id for m in stuck)])  # each once


async def test_r30_a_backlog_of_several_pages_all_goes_out_once(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    inbox, sms = harness.inbox, harness.sms
    profile = await harness.subscribed_profile()
    queued = [
        await inbox.send_message(profile, "campaign", f"c{i}", "Sale", f"offer {i}")
        for i in range(3 * PAGE)
    ]
    await trio.sleep(5)
    sent = [s.message_id for s in sms.sent]
    assert len(sent) == len(queued) and set(sent) == {m.id for m in queued}
