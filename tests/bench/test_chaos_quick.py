"""`tidings bench chaos --quick`: two trials of SIGKILL under load on SQLite, each with a
restart, written to results.md/results.json with every violation kind counted (webhook
deliveries to a receiver among them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidings import bench
from tidings.bench.chaos import KINDS


def test_quick_chaos_kills_restarts_and_counts_violations_by_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["chaos", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "chaos on sqlite: 2 trials, 2 kills" in printed

    data = json.loads((tmp_path / "results.json").read_text())
    figures = {f["name"]: f["median"] for f in data["scenarios"]["chaos"]["figures"]}
    assert figures["trials (sqlite)"] == 2
    assert figures["kills (sqlite)"] == 2
    assert figures["operations acknowledged (sqlite)"] > 50
    assert figures["checked: provider POSTs (sqlite)"] > 0
    for kind in KINDS:  # every kind is in the table, found or not
        assert f"violations: {kind} (sqlite)" in figures
    # what holds today: inbound SMS are stored exactly once, and `tidings check` is clean
    # after the restart's reconciliation (outbound exactly-once is counted, not assumed)
    assert figures["violations: inbound_lost (sqlite)"] == 0
    assert figures["violations: inbound_twice (sqlite)"] == 0
    assert not [name for name in figures if name.startswith("violations: check:")]
    # every event up to the settled one reached the webhook receiver, across the kill
    assert figures["checked: webhook deliveries (sqlite)"] > 0
    assert figures["violations: webhook_lost (sqlite)"] == 0
    assert figures["violations: webhook_ids_differ (sqlite)"] == 0
    assert figures["violations: webhook_bad_signature (sqlite)"] == 0
    markdown = (tmp_path / "results.md").read_text()
    assert "violations: sms_sent_twice (sqlite)" in markdown


def test_chaos_options_go_only_to_scenarios_that_take_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["actors", "--trials", "2"])
    assert exc.value.code == 2
    assert "--trials is not an option of actors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["chaos", "--trials", "0"])
