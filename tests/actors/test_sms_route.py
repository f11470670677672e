"""The steady state of inbound SMS: once a profile has routed an SMS to its SMS ticket, the
next plain SMS from its number goes straight to the ticket on the profile's route, one
actor turn and one commit, until the profile's state changes (R02, R15, R19, R25, R30)."""

from __future__ import annotations

import copy

import pytest
import trio
import trio.testing

from tests.actors.helpers import PHONE, Harness
from tidings.actors import invariants, thread
from tidings.actors.handoff import TicketInbound
from tidings.engine import Batch

Clock = trio.testing.MockClock


@pytest.fixture
def commits(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> list[Batch]:
    """Every batch the inbox's engine commits from now on."""
    store = harness.store
    seen: list[Batch] = []
    commit = store.commit

    async def counting(batch: Batch) -> list[int]:
        seen.append(batch)
        return await commit(batch)

    monkeypatch.setattr(store, "commit", counting)
    return seen


async def test_a_plain_sms_to_an_open_ticket_is_one_turn_and_one_commit(
    harness: Harness, commits: list[Batch], autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    first = await inbox.receive_sms("SM1", PHONE, "hello")
    assert inbox.app.sms_routes.get(profile) is not None  # granted by the profile's turn
    await trio.sleep(1)  # the ticket's flag reached the profile
    handled, commits[:] = inbox.engine.handled, []
    second = await inbox.receive_sms("SM2", PHONE, "are you there?")
    assert inbox.engine.handled - handled == 1  # the ticket's turn only
    assert len(commits) == 1 and commits[0].puts.keys() >= {
        f"msg:{second.id}",
        f"ticket:{first.ticket}",
    }
    assert commits[0].claims.keys() == {"idem:sms:SM2"}  # no read of it before the write
    assert (second.ticket, second.profile, second.kind) == (first.ticket, profile, "support")
    view = await inbox.ticket_get(first.ticket)  # type: ignore[arg-type]
    assert [m.body for m in view.messages if m.direction == "inbound"] == [
        "hello", "are you there?"
    ]  # fmt: skip
    assert [m.kind for m in view.messages if m.direction == "outbound"] == ["autoresponder"] * 2
    assert await invariants.check(harness.store) == []


async def test_a_repeated_sid_on_the_route_is_stored_once(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    first = await inbox.receive_sms("SM1", PHONE, "hello")
    got: list[str] = []

    async def deliver() -> None:
        got.append((await inbox.receive_sms("SMx", PHONE, "twice")).id)

    async with trio.open_nursery() as nursery:  # on the route and, meanwhile, the profile
        for _ in range(3):
            nursery.start_soon(deliver)
    got.append((await inbox.receive_sms("SMx", PHONE, "twice")).id)  # after it was stored
    assert len(set(got)) == 1
    log = await harness.store.log_tail(thread.stream("sms", first.profile, first.ticket), 10)
    assert log.count(got[0].encode()) == 1
    assert not inbox.app.sms_routes.in_flight


async def test_a_keyword_on_the_route_goes_to_the_profile(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    await inbox.receive_sms("SM1", PHONE, "hello")
    stop = await inbox.receive_sms("SM2", PHONE, "STOP")
    assert (stop.kind, stop.ticket) == ("keyword", None)  # R19: stored by the profile
    assert inbox.app.sms_routes.get(profile) is None  # consent changed: revoked
    assert not (await inbox.profile_get(profile)).subscribed
    after = await inbox.receive_sms("SM3", PHONE, "hello again")
    assert after.ticket is not None and after.kind == "support"


async def test_a_block_revokes_the_route_and_the_next_sms_is_the_profiles(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    first = await inbox.receive_sms("SM1", PHONE, "hello")
    await inbox.profile_block(profile)
    assert inbox.app.sms_routes.get(profile) is None
    silenced = await inbox.receive_sms("SM2", PHONE, "still here")
    assert silenced.ticket is None  # R15: stored, nothing else
    assert (await inbox.ticket_get(first.ticket)).ticket.state == "closed"  # type: ignore[arg-type]
    await trio.sleep(1)
    assert inbox.badge_get() == 0
    assert await invariants.check(harness.store) == []


async def test_a_read_ticket_counts_again_when_an_sms_comes_on_the_route(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    first = await inbox.receive_sms("SM1", PHONE, "hello")
    ticket = first.ticket
    assert ticket
    await inbox.ticket_mark(ticket, read=True)
    await trio.sleep(1)
    assert inbox.badge_get() == 0
    assert inbox.app.sms_routes.get(profile) is not None  # its tickets' flags keep it
    await inbox.receive_sms("SM2", PHONE, "one more thing")
    await trio.sleep(1)  # R18: the ticket's flag reaches the profile
    assert inbox.badge_get() == 1
    assert (await inbox.ticket_get(ticket)).ticket.unread
    assert await invariants.check(harness.store) == []


async def test_a_campaign_received_revokes_the_route_so_the_reply_is_attributed(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    profile = await harness.subscribed_profile()
    await inbox.receive_sms("SM1", PHONE, "hello")
    assert inbox.app.sms_routes.get(profile) is not None
    await inbox.send_message(profile, "campaign", "c1", "Winter sale", "20% off")
    await trio.sleep(60)  # sent and received (R25)
    assert inbox.app.sms_routes.get(profile) is None
    reply = await inbox.receive_sms("SM2", PHONE, "is it still on?")
    assert reply.attributed_to is not None and reply.attributed_to.id == "c1"
    plain = await inbox.receive_sms("SM3", PHONE, "thanks")
    assert plain.attributed_to is None and plain.ticket == reply.ticket


async def test_on_several_nodes_the_same_fresh_message_reaching_a_ticket_twice_is_stored_once(
    harness: Harness, autojump_clock: Clock
) -> None:
    """With a placement, mail a fenced turn could not finish moves on to the shard's new
    owner, so one fresh message can reach the same ticket instance twice: it looks the id
    up (R30) instead of trusting the steady state."""
    inbox = harness.inbox
    inbox.app.placed = True  # as `open_inbox` sets it for a placed engine
    profile = await harness.subscribed_profile()
    first = await inbox.receive_sms("SM1", PHONE, "hello")  # the ticket opened and committed
    assert first.ticket is not None
    stored = thread.inbound(
        profile=profile, channel="sms", ticket=first.ticket, kind="support", body="moved",
        media=[], now=inbox.app.now(),
    )  # fmt: skip

    def mail() -> TicketInbound:  # the same mail each time, as it would be decoded again
        return TicketInbound(copy.deepcopy(stored), phone=PHONE, fresh=True)

    once = await inbox.engine.ask(("ticket", first.ticket), mail())
    again = await inbox.engine.ask(("ticket", first.ticket), mail())
    assert again.id == once.id
    view = await inbox.ticket_get(first.ticket)
    assert [m.body for m in view.messages].count("moved") == 1
    assert await invariants.check(harness.store) == []


async def _burst(harness: Harness, sids: list[str]) -> dict[str, str]:
    """Deliver `sids` from one phone at once, so they wait for the ticket's next turn
    together; the id each was answered with."""
    got: dict[str, str] = {}

    async def deliver(sid: str) -> None:
        got[sid] = (await harness.inbox.receive_sms(sid, PHONE, f"line {sid}")).id

    async with trio.open_nursery() as nursery:
        for sid in sids:
            nursery.start_soon(deliver, sid)
    return got


async def test_a_burst_of_sms_to_an_open_ticket_is_stored_in_one_commit(
    harness: Harness, commits: list[Batch], autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    await harness.subscribed_profile()
    first = await inbox.receive_sms("SM0", PHONE, "hello")
    await trio.sleep(1)
    commits[:] = []
    got = await _burst(harness, [f"SM{i}" for i in range(1, 9)])
    assert len(commits) == 1
    assert commits[0].claims.keys() == {f"idem:sms:SM{i}" for i in range(1, 9)}
    view = await inbox.ticket_get(first.ticket)  # type: ignore[arg-type]
    inbound = [m for m in view.messages if m.direction == "inbound"]
    assert sorted(m.id for m in inbound[1:]) == sorted(got.values())
    assert sorted(m.body for m in inbound[1:]) == sorted(f"line SM{i}" for i in range(1, 9))
    assert await invariants.check(harness.store) == []


async def test_r30_a_burst_holding_a_sid_stored_before_stores_every_message_once(
    harness: Harness, autojump_clock: Clock
) -> None:
    inbox = harness.inbox
    first = await inbox.receive_sms("SM0", PHONE, "hello")
    again = await inbox.receive_sms("SM1", PHONE, "line SM1")
    await trio.sleep(1)
    got = await _burst(harness, [f"SM{i}" for i in (2, 3, 1, 4, 5)])  # SM1 again, in the run
    assert got["SM1"] == again.id  # R30: answered with the message stored before
    assert inbox.engine.restarts == 0  # the run's refused commit is no crash: each went alone
    view = await inbox.ticket_get(first.ticket)  # type: ignore[arg-type]
    inbound = [m.id for m in view.messages if m.direction == "inbound"]
    assert sorted(inbound) == sorted([first.id, again.id, *(got[f"SM{i}"] for i in (2, 3, 4, 5))])
    assert await invariants.check(harness.store) == []
