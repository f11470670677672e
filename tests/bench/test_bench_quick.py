"""The benchmark harness end to end: `actors`, `timers`, `pipeline`, `recovery` and
`search` in --quick mode write every figure (positive) to results.md, results.json and one
chart per scenario."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tidings import bench

EXPECTED = {
    "actors": [
        "engine tell, 1,000 actors, 20,000 msgs",
        "raw trio, 1,000 tasks + memory channels",
        "pykka, ",
        "engine idle resident actor (10,000)",
        "raw trio task parked on a memory channel (10,000)",
    ],
    "timers": [
        "engine pending volatile timer (50,000)",
        "trio task sleeping until due",
        "engine durable timer writes (50,000",
        "MemoryStore.commit of pre-encoded timers (50,000)",
        "engine start over 50,000 stored durable timers",
        "durable timers in memory after that start (of 50,000)",
        "engine volatile timer lag p50",
        "engine volatile timer lag p99",
        "trio.sleep_until task lag p50",
        "trio.sleep_until task lag p99",
    ],
    "pipeline": [
        "engine on memory, 5,000 SMS / 500 profiles, 200 senders",
        "raw trio chain (vs memory)",
        "engine on memory, latency p50",
        "engine on memory, latency p99",
        "engine on sqlite, 5,000 SMS / 500 profiles, 200 senders",
        "raw trio chain (vs sqlite)",
        "engine on sqlite, latency p50",
        "engine on sqlite, latency p99",
        "raw trio chain latency p99 (vs sqlite)",
        "tickets_list(open, unread, 50) on sqlite, 500 open unread tickets",
        "badge_get() on sqlite",
        "resident actors after the run (500 profiles)",
        "resident actors after passivate_idle",
        "engine on sqlite, one conversation (2,000 SMS from one phone, 200 senders), drains",
        "engine on sqlite, one conversation (2,000 SMS from one phone, 200 senders), one commit",
    ],
    "recovery": [
        "bulk write of 20,000 tickets",
        "open_store + open_inbox ready, 20,000 stored tickets",
        "raw sqlite3.connect + SELECT 1 (vs open)",
        "first receive_sms after start, 20,000 stored tickets",
        "raw sqlite3.connect + SELECT 1 (vs first receive_sms)",
        "tickets_list(open, unread, 50) over 20,000 stored tickets",
    ],
    "search": [
        "bulk write of 5,000 messages with their index entries",
        "messages.search over 5,000 messages, median of 50 queries",
        "messages.search over 5,000 messages, p99",
        "bare FTS5 MATCH LIMIT 20, median (vs median)",
        "bare FTS5 MATCH LIMIT 20, p99 (vs p99)",
        "messages.search median, order number",
        "messages.search median, two common words",
    ],
}
SCENARIOS = list(EXPECTED)


def test_quick_run_writes_every_figure_with_ratios(tmp_path: Path) -> None:
    # A plain (sync) test: the scenarios run their own trio.run, one per measurement.
    assert bench.main([*SCENARIOS, "--quick", "--out", str(tmp_path)]) == 0

    for name in ("results.md", "results.json", *(f"{s}.png" for s in SCENARIOS)):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "actors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["quick"] is True
    markdown = (tmp_path / "results.md").read_text()
    for scenario, prefixes in EXPECTED.items():
        figures = data["scenarios"][scenario]["figures"]
        names = [f["name"] for f in figures]
        for prefix in prefixes:
            matching = [f for f in figures if f["name"].startswith(prefix)]
            assert matching, f"{scenario}: no row starting {prefix!r} in {names}"
            for f in matching:
                assert f["median"] > 0, f
                assert all(s > 0 for s in f["samples"]), f
                assert f["name"] in markdown
        by_name = {f["name"]: f for f in figures}
        for f in figures:
            if f["baseline_of"] is not None:
                engine = by_name[f["baseline_of"]]
                assert f["ratio"] > 0
                assert abs(f["ratio"] - engine["median"] / f["median"]) < 1e-9 * f["ratio"]
    # engine ÷ raw trio and engine ÷ pykka are both reported for the tell workload
    tell = "engine tell, 1,000 actors, 20,000 msgs"
    assert len([f for f in data["scenarios"]["actors"]["figures"] if f["baseline_of"] == tell]) == 2
    # memory is bounded by the active set: passivation leaves fewer actors than the run made
    pipeline = {f["name"]: f["median"] for f in data["scenarios"]["pipeline"]["figures"]}
    before = pipeline["resident actors after the run (500 profiles)"]
    after = next(v for k, v in pipeline.items() if k.startswith("resident actors after passivate"))
    assert 0 < after < before


WEBSOCKET_EXPECTED = [  # a real `tidings serve` subprocess against a bare echo
    "engine /ws/chat acks, 100 visitors @ 200 msg/s",
    "trio-websocket echo, 100 visitors @ 200 msg/s",
    "engine visitor→agent p50, 100 visitors",
    "echo round trip p50, 100 visitors",
    "engine visitor→agent p99, 100 visitors",
    "echo round trip p99, 100 visitors",
    "engine server CPU per message, 100 visitors",
    "echo server CPU per message, 100 visitors",
    "engine clients' CPU per message (2 processes + agent), 100 visitors",
    "echo clients' CPU per message (2 processes), 100 visitors",
]

WEBHOOK_EXPECTED = [  # real `tidings serve` subprocesses (SQLite) against a bare route
    name
    for what in ("autoresponder off", "autoresponder on")
    # the steady state (known phones, open tickets), then first messages from new phones
    for path in ("", "first message from a new phone, ")
    for name in (
        f"engine POST /sms/inbound ({path}signed, SQLite, {what}), 8 connections",
        f"bare Starlette POST route, same hypercorn (vs {path}{what}), 8 connections",
        f"engine webhook p50 ({path}{what}), 8 connections",
        f"engine webhook p99 ({path}{what}), 8 connections",
        f"engine server CPU per request ({path}{what})",
        f"bare route server CPU per request (vs {path}{what})",
    )
] + ["bare route p50, 8 connections", "bare route p99, 8 connections"]


def _server_figures(out: Path, scenario: str, expected: list[str]) -> dict[str, dict[str, Any]]:
    """The figures of `scenario` in `out`, checked: exactly `expected` (as prefixes), each
    positive, each baseline with its ratio; by name."""
    data = json.loads((out / "results.json").read_text())
    assert (out / f"{scenario}.png").stat().st_size > 0
    figures = data["scenarios"][scenario]["figures"]
    names = [f["name"] for f in figures]
    assert len(figures) == len(expected), names
    for prefix in expected:
        matching = [f for f in figures if f["name"].startswith(prefix)]
        assert matching, f"{scenario}: no row starting {prefix!r} in {names}"
        for f in matching:
            assert f["median"] > 0 and all(s > 0 for s in f["samples"]), f
            if f["baseline_of"] is not None:
                assert f["ratio"] > 0, f
    return {f["name"]: f for f in figures}


def test_quick_websocket_scenario_writes_every_figure(tmp_path: Path) -> None:
    assert bench.main(["websocket", "--quick", "--out", str(tmp_path)]) == 0
    _server_figures(tmp_path, "websocket", WEBSOCKET_EXPECTED)


def test_quick_webhook_with_the_python_client_says_so(tmp_path: Path) -> None:
    # The fallback when wrk is missing: the suite needs no wrk for this one.
    assert bench.main(["webhook", "--quick", "--loadgen", "python", "--out", str(tmp_path)]) == 0
    figures = _server_figures(tmp_path, "webhook", WEBHOOK_EXPECTED)
    off = figures["engine POST /sms/inbound (signed, SQLite, autoresponder off), 8 connections"]
    on = figures["engine POST /sms/inbound (signed, SQLite, autoresponder on), 8 connections"]
    assert off["note"].startswith("load generator: the Python client"), off
    assert "the Twilio stand-in took" in on["note"], on
    assert "Python client" in (tmp_path / "results.md").read_text()


def test_quick_webhook_with_wrk_says_so(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        message = "wrk is not on PATH"
        if os.environ.get("TIDINGS_REQUIRE_WRK") == "1":
            pytest.fail(message + " and TIDINGS_REQUIRE_WRK=1")
        pytest.skip(message)
    assert bench.main(["webhook", "--quick", "--out", str(tmp_path)]) == 0  # wrk by default
    figures = _server_figures(tmp_path, "webhook", WEBHOOK_EXPECTED)
    off = figures["engine POST /sms/inbound (signed, SQLite, autoresponder off), 8 connections"]
    assert off["note"].startswith("load generator: wrk"), off
    assert "load generator: wrk" in (tmp_path / "results.md").read_text()


CLUSTER_EXPECTED = [  # three nodes on a private redis-server, two of them killed in turn
    "1 node, webhooks/s, 8 concurrent",
    "2 nodes, webhooks/s, 8 concurrent",
    "1 node (vs 2)",
    "3 nodes, webhooks/s, 8 concurrent",
    "1 node (vs 3)",
    "1 node(s), webhook p99",
    "2 node(s), webhook p99",
    "3 node(s), webhook p99",
    "1 node(s), CPU per webhook, node n0",
    "1 node(s), Redis CPU per webhook",
    "2 node(s), CPU per webhook, node n0",
    "2 node(s), CPU per webhook, node n1",
    "2 node(s), CPU per webhook, all nodes",
    "2 node(s), Redis CPU per webhook",
    "3 node(s), CPU per webhook, node n0",
    "3 node(s), CPU per webhook, node n1",
    "3 node(s), CPU per webhook, node n2",
    "3 node(s), CPU per webhook, all nodes",
    "3 node(s), Redis CPU per webhook",
    "failover: kill to every shard served, median of 2",
    "webhook p99 on the survivors during failovers",
]


def test_quick_cluster_scenario_writes_every_figure(tmp_path: Path, redis_server: object) -> None:
    # `redis_server`: the scenario starts its own, so it skips (or fails, with
    # TIDINGS_REQUIRE_REDIS=1) as the other Redis tests do when redis-server is missing
    assert bench.main(["cluster", "--quick", "--out", str(tmp_path)]) == 0
    _server_figures(tmp_path, "cluster", CLUSTER_EXPECTED)
