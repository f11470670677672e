"""Hostile input never takes the server down (issue 11, item 5; contract v3, "Limits and
bad input").

About 1,000 hypothesis-generated inputs (`bench/hostile.py`: every `/ws/agent` op and
argument, every `/ws/chat` frame, every `/api/*` operation of the OpenAPI document, the
SMS webhooks and short links) go to ONE real `tidings serve` process, judged as they are
answered (`bench/fuzz.py`). `tidings bench fuzz` runs the same with 10,000. The tables of
strategies are checked against the code, so a new op or argument cannot go unfuzzed.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tidings.bench import fuzz, hostile
from tidings.bench.fuzz import FAILURES, FLAT_MIB, KINDS, Report, Target
from tidings.transports import http_api
from tidings.transports.ws_agent import OPS, Session, TicketArg

INPUTS = 1_000


def test_every_agent_op_and_chat_frame_has_a_strategy_for_each_of_its_arguments() -> None:
    assert hostile.missing_strategies() == []


def test_an_op_or_argument_without_a_strategy_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    class TicketMerge(TicketArg):
        into: str

    monkeypatch.setitem(OPS, "ticket.merge", (Session.ticket_get, TicketMerge))
    monkeypatch.setitem(OPS, "ticket.reply", (Session.ticket_reply, TicketMerge))
    assert hostile.missing_strategies() == [
        "op ticket.merge",
        "op ticket.reply: body",  # the strategy's arguments that the op no longer has…
        "op ticket.reply: into",  # …and the op's argument that has no strategy
        "op ticket.reply: media",
        "op ticket.reply: schedule",
        "op ticket.reply: send_anyway",
    ]


def test_every_api_endpoint_is_fuzzed_through_the_openapi_document() -> None:
    assert fuzz.api_paths() == {f"/api/{name}" for name in http_api.API}


def test_a_refusal_that_names_no_argument_of_the_request_is_counted() -> None:
    target = Target("http://127.0.0.1:1", 0, Report(), hostile.Pool())
    names = {"ticket", "body", "frame"}
    target.refusal("ticket.reply", {"code": "bad_request", "detail": "ticket: is required"}, names, None)
    target.refusal("ticket.reply", {"code": "bad_request", "detail": "frame[0]: bad"}, names, None)
    assert not target.report.failures
    target.refusal("ticket.reply", {"code": "bad_request", "detail": "Expected `str`"}, names, None)
    target.refusal("ticket.reply", {"code": "internal", "detail": "internal error"}, names, None)
    target.refusal("ticket.reply", {"code": "bad_request"}, names, None)
    target.closed(1011, set(), "agent")
    assert target.report.failures == Counter({
        "refusal not naming its argument": 1, "internal error": 1, "malformed refusal": 1, "ws 1011": 1,
    })  # fmt: skip


async def test_a_thousand_hostile_inputs_leave_one_server_alive_without_500_1011_or_leak() -> None:
    report = await fuzz.fuzz(INPUTS)
    print(report.summary())
    assert report.sent >= INPUTS
    assert all(report.inputs[kind] > 0 for kind in KINDS), report.inputs
    assert {kind: report.failures[kind] for kind in FAILURES} == dict.fromkeys(FAILURES, 0), report.summary()
    assert report.statuses[200] > 0 and report.errors["bad_request"] > 0  # both sides were reached
    assert report.growth_mib < FLAT_MIB, report.summary()
    assert report.check == "clean: every invariant holds"
