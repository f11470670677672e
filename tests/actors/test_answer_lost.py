"""An answer lost with the node that handled the ask (`AnswerLost`, several nodes on one
store): the inbound SMS asks again and is stored once, as if nothing happened."""

from __future__ import annotations

from typing import Any

import trio.testing

from tests.actors.helpers import PHONE, Harness
from tidings.actors.directory import Resolve
from tidings.engine import AnswerLost


async def test_a_directory_answer_lost_after_its_commit_is_asked_again(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    engine = harness.inbox.engine
    ask = engine.ask
    lost: list[Any] = []

    async def ask_losing_the_first_resolve(address: Any, msg: Any, *args: Any, **kw: Any) -> Any:
        answer = await ask(address, msg, *args, **kw)
        if isinstance(msg, Resolve) and not lost:
            lost.append(answer)  # handled and stored, but the answer never came back
            raise AnswerLost("the node that handled it stopped before answering")
        return answer

    engine.ask = ask_losing_the_first_resolve  # type: ignore[method-assign]
    await harness.inbox.receive_sms("SM1", PHONE, "hello", [])
    assert lost, "the first Resolve was not lost"
    events = await harness.events()
    inbound = [
        e["data"]["message"]
        for e in events
        if e["event"] == "message.created" and e["data"]["message"]["direction"] == "inbound"
    ]
    tickets = [e["data"]["ticket"] for e in events if e["event"] == "ticket.created"]
    assert len(inbound) == 1 and len(tickets) == 1  # stored once, one ticket
    assert inbound[0]["profile"] == tickets[0]["profile"] == lost[0]  # the profile made first
