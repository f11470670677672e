"""R30 outbound (PROTOCOL.md, *Delivery guarantees*): every outbound SMS is handed to the
provider once, through crashes of a turn and failed asks; consent and blocking are checked
at hand-off for held replies (R27, R04, R15); the provider's ErrorCode is kept, and 21610
withdraws consent. The provider is Twilio's REST API stand-in, counting every POST."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio.testing

from tests.actors.helpers import ACCOUNT, PHONE, START
from tests.transports.helpers import TWILIO_SID, TWILIO_TOKEN, TwilioStandIn
from tidings.actors import thread
from tidings.actors.brand import Timing
from tidings.actors.courier import Mailed, Sent
from tidings.actors.errors import InboxError
from tidings.actors.inbox import Inbox, open_inbox
from tidings.actors.model import Message
from tidings.actors.ticket import ScheduledSend
from tidings.engine import AskTimeout, Batch, TrioWallClock
from tidings.engine.store.memory import MemoryStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import TwilioSms

Clock = trio.testing.MockClock


@dataclass
class Twilioed:
    """An inbox whose SMS go to the Twilio stand-in (and e-mails to `mail`)."""

    inbox: Inbox
    twilio: TwilioStandIn
    store: MemoryStore
    mail: OutboxMail

    async def stored(self, message_id: str) -> Message:
        found = await thread.load(self.store, message_id)
        assert found is not None
        return found.message

    def bodies(self) -> list[str]:
        """The body of every SMS the provider took."""
        return [dict(form).get("Body", "") for form in self.twilio.accepted]

    async def ticket_of_subscribed(self, **extra: Any) -> tuple[str, str]:
        """A profile with SMS consent that texted in: (profile, ticket)."""
        profile = await self.inbox.upsert_profile(
            {"phone": PHONE, "consent": {"marketing": False, "transactional": True}, **extra}
        )
        ticket = (await self.inbox.receive_sms("SMin1", PHONE, "hi")).ticket
        assert ticket
        await trio.sleep(5)  # its autoresponse went: the counts start afresh
        assert self.twilio.posts == 1
        self.twilio.accepted.clear()
        self.twilio.posts = 0
        return profile.id, ticket


@pytest.fixture
async def twilioed(autojump_clock: Clock) -> AsyncIterator[Twilioed]:
    clock = TrioWallClock(START)
    stand_in = TwilioStandIn(clock=clock.now)
    exchange = stand_in.exchange()
    sms = TwilioSms(
        TWILIO_SID, TWILIO_TOKEN, "http://twilio.test", None, exchange, wall_clock=clock.now
    )
    store, mail = MemoryStore(), OutboxMail()
    async with open_inbox(
        store, account=ACCOUNT, timing=Timing(), sms=sms, mail=mail, clock=clock
    ) as inbox:
        yield Twilioed(inbox, stand_in, store, mail)
    await exchange.aclose()


async def test_r30_a_failed_ask_of_the_owner_retries_the_recording_not_the_send(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    _, ticket = await twilioed.ticket_of_subscribed()
    failed = fail_asks_once(inbox, Sent)
    reply = await inbox.ticket_reply(ticket, "on its way", author="a1")
    await trio.sleep(5)
    assert failed and failed[0].message == reply.id  # the provider took it, the ask failed
    assert (await twilioed.stored(reply.id)).provider_id is None
    await trio.sleep(60)  # the courier's next round
    stored = await twilioed.stored(reply.id)
    assert (stored.provider_id, stored.status) == ("SM2", "queued")
    assert twilioed.twilio.posts == 1 and twilioed.bodies() == ["on its way"]
    assert await inbox.engine.store.get(f"outbox:{reply.id}") is None  # the job is done


def fail_asks_once(inbox: Inbox, kind: type) -> list[Any]:
    """Make the first ask of a `kind` request fail as timed out; returns what failed."""
    context = inbox.engine.context
    ask = context.ask
    failed: list[Any] = []

    async def failing_once(address: Any, msg: Any, timeout: float = 10.0) -> Any:
        if isinstance(msg, kind) and not failed:
            failed.append(msg)
            raise AskTimeout(address, timeout)
        return await ask(address, msg, timeout)

    context.ask = failing_once
    return failed


async def test_r21_a_failed_ask_after_an_email_went_retries_only_the_recording(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    await inbox.settings_update(
        {"notifications": {"new_ticket_email": {"enabled": True, "recipients": ["a@acme.example"]}}}
    )
    failed = fail_asks_once(inbox, Mailed)
    await inbox.upsert_profile({"phone": PHONE})
    ticket = (await inbox.receive_sms("SMin1", PHONE, "hi")).ticket
    await trio.sleep(90)  # the first recording failed; the courier's next round recorded it
    assert failed and failed[0].job == f"new-ticket:{ticket}"
    assert len(twilioed.mail.sent) == 1
    assert await inbox.engine.store.get(f"outbox:new-ticket:{ticket}") is None


async def test_r30_a_refusal_by_the_provider_fails_the_message_with_its_code(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    _, ticket = await twilioed.ticket_of_subscribed()
    twilioed.twilio.script.append("400")
    reply = await inbox.ticket_reply(ticket, "to a bad number", author="a1")
    await trio.sleep(5)
    stored = await twilioed.stored(reply.id)
    assert (stored.status, stored.error_code) == ("failed", "21211")
    await trio.sleep(120)
    assert twilioed.twilio.posts == 1  # failed for good: not tried again


def crash_once_after_the_commit(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The next turn that queues an outbox job crashes once, after its commit, inside the
    turn (where it tells the courier); the list says whether it did."""
    courier = inbox.courier
    crashes: list[bool] = []
    queued = courier.queued

    def crash_once() -> None:
        if not crashes:
            crashes.append(True)
            raise RuntimeError("crash after the commit")
        queued()

    monkeypatch.setattr(courier, "queued", crash_once)
    return crashes


async def test_r30_a_turn_retried_after_its_commit_writes_one_reply(
    twilioed: Twilioed, autojump_clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = twilioed.inbox
    profile, ticket = await twilioed.ticket_of_subscribed()
    crashes = crash_once_after_the_commit(inbox, monkeypatch)
    reply = await inbox.ticket_reply(ticket, "only once", author="a1")
    await trio.sleep(60)
    assert crashes
    log = thread.stream("sms", profile, ticket)
    outbound = [m for m in await thread.last_messages(twilioed.store, log) if m.author == "a1"]
    assert [m.id for m in outbound] == [reply.id]
    assert twilioed.bodies() == ["only once"]


async def test_r30_an_inbound_turn_retried_after_its_commit_stores_one_message(
    twilioed: Twilioed, autojump_clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the ticket's instance has committed before, so a fresh message id is not looked up
    # first; the engine retries the crashed turn on a new instance, which looks it up
    inbox = twilioed.inbox
    profile, ticket = await twilioed.ticket_of_subscribed()
    crashes = crash_once_after_the_commit(inbox, monkeypatch)  # with its autoresponse
    message = await inbox.receive_sms("SMin2", PHONE, "only once")
    await trio.sleep(60)
    assert crashes
    log = thread.stream("sms", profile, ticket)
    stored = await thread.last_messages(twilioed.store, log)
    assert [m.id for m in stored if m.direction == "inbound"][1:] == [message.id]
    assert len([m for m in stored if m.kind == "autoresponder"]) == 2  # one per inbound
    assert twilioed.twilio.posts == 1


async def test_r30_r27_scheduled_reply_goes_once_although_the_provider_answers_queued(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    _, ticket = await twilioed.ticket_of_subscribed(location={"timezone": "Asia/Tokyo"})
    scheduled = await inbox.ticket_reply(ticket, "good morning", author="a1", schedule=True)
    assert (await twilioed.stored(scheduled.id)).status == "queued"
    await trio.sleep(3600)
    assert twilioed.twilio.posts == 0  # 01:00 in Tokyo: held
    await trio.sleep(8 * 3600)  # past 08:00 in Tokyo
    stored = await twilioed.stored(scheduled.id)
    assert (stored.status, stored.provider_id) == ("queued", "SM2")  # the provider's answer
    # the send timer fires again, as after a crash before its acknowledgement
    await inbox.engine.tell(("ticket", ticket), ScheduledSend(scheduled.id, PHONE))
    await trio.sleep(120)
    assert twilioed.twilio.posts == 1 and twilioed.bodies() == ["good morning"]


@pytest.mark.parametrize("change", ["stop", "block"])
async def test_r27_held_reply_is_not_sent_after_opt_out_or_block(
    twilioed: Twilioed, autojump_clock: Clock, change: str
) -> None:
    inbox = twilioed.inbox
    profile, ticket = await twilioed.ticket_of_subscribed(location={"timezone": "Asia/Tokyo"})
    held = await inbox.ticket_reply(ticket, "see you at 8", author="a1", schedule=True)
    if change == "stop":
        await inbox.receive_sms("SMin2", PHONE, "STOP")
    else:
        await inbox.profile_block(profile)
    await trio.sleep(9 * 3600)  # the hold ended
    stored = await twilioed.stored(held.id)
    expected = "not_subscribed" if change == "stop" else "blocked"
    assert (stored.status, stored.error_code, stored.provider_id) == ("failed", expected, None)
    # only the opt-out's confirmation (R19) went out
    confirmations = [b for b in twilioed.bodies() if "unsubscribed" in b]
    assert twilioed.twilio.posts == len(confirmations) == (1 if change == "stop" else 0)
    assert await inbox.engine.store.get(f"outbox:{held.id}") is None


async def test_r04_held_reply_still_goes_when_consent_stays(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    profile, ticket = await twilioed.ticket_of_subscribed(location={"timezone": "Asia/Tokyo"})
    held = await inbox.ticket_reply(ticket, "see you at 8", author="a1", schedule=True)
    await inbox.upsert_profile({"id": profile, "name": "Kei"})  # an unrelated change
    await trio.sleep(9 * 3600)
    stored = await twilioed.stored(held.id)
    assert (stored.status, stored.error_code) == ("queued", None)
    assert twilioed.bodies() == ["see you at 8"]


async def test_r30_error_code_21610_withdraws_consent_without_a_confirmation(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    profile, ticket = await twilioed.ticket_of_subscribed()
    reply = await inbox.ticket_reply(ticket, "hello", author="a1")
    await trio.sleep(5)
    provider_id = (await twilioed.stored(reply.id)).provider_id
    assert provider_id == "SM2"
    await inbox.sms_status(provider_id, "failed", "21610")
    await trio.sleep(1)
    stored = await twilioed.stored(reply.id)
    assert (stored.status, stored.error_code) == ("failed", "21610")
    view = await inbox.profile_get(profile)
    assert not view.subscribed and not view.consent.transactional
    assert twilioed.twilio.posts == 1  # no opt-out confirmation was sent
    with pytest.raises(InboxError) as refused:  # R04: replies are refused from now on
        await inbox.ticket_reply(ticket, "still there?", author="a1")
    assert refused.value.code == "not_subscribed"


async def test_r30_other_error_codes_are_kept_and_leave_consent(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    profile, ticket = await twilioed.ticket_of_subscribed()
    reply = await inbox.ticket_reply(ticket, "hello", author="a1")
    await trio.sleep(5)
    await inbox.sms_status("SM2", "undelivered", "30003")
    await trio.sleep(1)
    stored = await twilioed.stored(reply.id)
    assert (stored.status, stored.error_code) == ("undelivered", "30003")
    assert (await inbox.profile_get(profile)).subscribed


async def test_r30_a_refusal_with_21610_withdraws_consent_too(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    profile, ticket = await twilioed.ticket_of_subscribed()
    twilioed.twilio.script.append("opted-out")
    reply = await inbox.ticket_reply(ticket, "hello", author="a1")
    await trio.sleep(5)
    assert (await twilioed.stored(reply.id)).error_code == "21610"
    assert not (await inbox.profile_get(profile)).subscribed
    assert twilioed.twilio.posts == 1


async def test_r27_a_reply_held_before_the_flag_existed_is_still_sent_once(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    _, ticket = await twilioed.ticket_of_subscribed(location={"timezone": "Asia/Tokyo"})
    held = await inbox.ticket_reply(ticket, "good morning", author="a1", schedule=True)
    stored = await thread.load(twilioed.store, held.id)
    assert stored is not None and stored.held
    stored.held = False  # as an older version stored it
    batch = Batch()
    thread.record(batch, stored, new=False)
    await inbox.engine.commit(batch)
    await trio.sleep(9 * 3600)
    await inbox.engine.tell(("ticket", ticket), ScheduledSend(held.id, PHONE))  # again
    await trio.sleep(120)
    assert twilioed.bodies() == ["good morning"]


async def test_r09_the_thread_shows_a_refused_held_reply_as_failed_with_its_reason(
    twilioed: Twilioed, autojump_clock: Clock
) -> None:
    inbox = twilioed.inbox
    _, ticket = await twilioed.ticket_of_subscribed(location={"timezone": "Asia/Tokyo"})
    held = await inbox.ticket_reply(ticket, "see you at 8", author="a1", schedule=True)
    await inbox.receive_sms("SMin2", PHONE, "STOP")
    await trio.sleep(9 * 3600)  # the hold ended; the profile had opted out meanwhile
    thread_view = (await inbox.ticket_get(ticket)).messages
    shown = next(m for m in thread_view if m.id == held.id)
    assert (shown.status, shown.error_code) == ("failed", "not_subscribed")
    assert twilioed.twilio.posts == 1  # the opt-out's confirmation only (R19)
