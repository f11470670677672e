"""R30 across nodes: the node that handled an ask may stop before its answer comes back
(`AnswerLost`). The inbox asks the directory's `Resolve` and an inbound SMS once more,
and the second handling finds what the first stored: one profile, one message."""

from __future__ import annotations

from typing import Any

import pytest
import trio.testing

from tests.actors.helpers import PHONE, Harness
from tidings.actors import invariants
from tidings.engine import AnswerLost


async def test_an_inbound_sms_whose_answers_were_lost_is_stored_once_on_one_profile(
    harness: Harness, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = harness.inbox.engine
    ask = engine.ask
    lost: list[str] = []

    async def losing_first_answers(address: Any, msg: Any, timeout: float = 10.0) -> Any:
        answer = await ask(address, msg, timeout)  # handled and committed
        if type(msg).__name__ not in lost:  # each kind's first answer never comes back
            lost.append(type(msg).__name__)
            raise AnswerLost("the node that handled it stopped before answering")
        return answer

    monkeypatch.setattr(engine, "ask", losing_first_answers)
    first = await harness.inbox.receive_sms("SM1", PHONE, "hello")
    assert lost == ["Resolve", "InboundSms"]
    monkeypatch.setattr(engine, "ask", ask)
    again = await harness.inbox.receive_sms("SM1", PHONE, "hello")  # the provider's retry
    assert again.id == first.id
    view = await harness.inbox.ticket_get(first.ticket)
    assert [m.body for m in view.messages if m.direction == "inbound"] == ["hello"]
    profiles = await harness.inbox.profiles_search(PHONE)
    assert [p.id for p in profiles] == [view.ticket.profile]
    assert await invariants.check(harness.store) == []
