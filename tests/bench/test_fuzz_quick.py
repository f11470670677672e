"""`tidings bench fuzz --inputs N`: the hostile-input fuzz as a bench scenario, its
figures (inputs by kind, failures by kind, RSS, `tidings check`, duration) written to
results.md and results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidings import bench
from tidings.bench.fuzz import FAILURES, KINDS


def test_bench_fuzz_sends_the_inputs_asked_for_and_writes_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["fuzz", "--inputs", "150", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "check: clean: every invariant holds" in printed

    data = json.loads((tmp_path / "results.json").read_text())
    figures = {f["name"]: f["median"] for f in data["scenarios"]["fuzz"]["figures"]}
    assert figures["inputs, all kinds"] >= 150
    assert sum(figures[f"inputs: {kind}"] for kind in KINDS) == figures["inputs, all kinds"]
    for kind in FAILURES:  # every kind is in the table, found or not
        assert figures[f"failures: {kind}"] == 0, printed  # the summary names an example
    assert 0 < figures["RSS at start"] <= figures["RSS after warm-up"] + 16
    assert figures["RSS at the end"] > 0 and figures["duration"] > 0
    assert figures["tidings check violations"] == 0
    assert "failures: ws 1011" in (tmp_path / "results.md").read_text()
