"""Contract v3, "Limits and bad input": a provider's MessageSid (and a web chat
`client_id`) is remembered for `limits.idempotency_kept_days` (7 by default) and then
dropped, and retention drops old events while the stored log stays gap-free above
`oldest`. Time comes from trio's MockClock."""

from __future__ import annotations

import trio
import trio.testing

from tests.actors.helpers import Harness
from tidings.actors import invariants
from tidings.engine.retention import EXPIRING

DAY = 86400.0
SWEEP = 3600.0  # the retention service sweeps hourly


async def test_message_sid_remembered_7_days_then_dropped(
    autojump_clock: trio.testing.MockClock, harness: Harness
) -> None:
    inbox, store = harness.inbox, harness.store
    await harness.subscribed_profile()
    first = await inbox.receive_sms("SM1", "+15551230000", "where is my order?")
    keyword = await inbox.receive_sms("SM2", "+15551230000", "HELP")  # kept by the profile
    assert first.ticket is not None and keyword.kind == "keyword"
    await trio.sleep(7 * DAY - SWEEP)
    # a retry within 7 days stores nothing new: the same message comes back
    assert (await inbox.receive_sms("SM1", "+15551230000", "where is my order?")).id == first.id
    assert (await inbox.receive_sms("SM2", "+15551230000", "HELP")).id == keyword.id
    assert await store.get("idem:sms:SM1") == first.id.encode()
    await trio.sleep(2 * SWEEP + 1)  # 7 days and a sweep after the first delivery
    assert await store.get_many(["idem:sms:SM1", "idem:sms:SM2"]) == [None, None]
    assert await store.index_count(EXPIRING, frozenset()) == 0
    # the messages themselves stay; only the retry guard is forgotten
    assert (await inbox.ticket_get(first.ticket)).messages[0].id == first.id
    again = await inbox.receive_sms("SM1", "+15551230000", "where is my order?")
    assert again.id != first.id


async def test_webchat_client_id_expires_like_a_message_sid(
    autojump_clock: trio.testing.MockClock, harness: Harness
) -> None:
    inbox, store = harness.inbox, harness.store
    ready = await inbox.chat_hello(None)
    sent = await inbox.chat_message(ready.session, "hello", client_id="c1")
    key = f"idem:chat:{ready.session}:c1"
    assert await store.get(key) == sent.id.encode()
    assert (await inbox.chat_message(ready.session, "hello", client_id="c1")).id == sent.id
    await trio.sleep(7 * DAY + 2 * SWEEP)
    assert await store.get(key) is None


async def test_retention_drops_events_older_than_7_days_and_the_log_stays_gap_free(
    autojump_clock: trio.testing.MockClock, harness: Harness
) -> None:
    inbox, store = harness.inbox, harness.store
    await harness.subscribed_profile()
    await inbox.receive_sms("SM1", "+15551230000", "day 0")
    await trio.sleep(1.5 * SWEEP)  # the day's events (the autoresponse's status too) settle
    day0 = inbox.last_seq
    await trio.sleep(3 * DAY)
    await inbox.receive_sms("SM2", "+15551230000", "day 3")
    day3 = inbox.last_seq
    assert inbox.oldest_seq == 1
    await trio.sleep(4 * DAY + 2 * SWEEP)  # day 0 is more than 7 days old now
    assert inbox.oldest_seq == day0 + 1
    assert await store.first_event_seq() == day0 + 1
    assert [e["event"] for e in await harness.events(0)] == [
        e["event"] for e in await harness.events(day0)
    ]  # a replay from before oldest starts at oldest
    assert await invariants.event_gaps(store) == []
    assert inbox.last_seq >= day3 > day0
