"""The engine-as-a-library example runs, debounces and reports through its service."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import trio.testing

EXAMPLE = Path(__file__).parents[2] / "examples" / "engine_backbone.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("engine_backbone", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_engine_backbone_example_debounces_a_burst_into_one_reindex(
    autojump_clock: trio.testing.MockClock,
) -> None:
    example = load_example()
    summary = await example.main()
    assert summary == {
        "text": "tidings is a backbone",
        "indexed_before_debounce": 0,  # the burst kept moving the durable timer
        "indexed_after_debounce": 4,  # then one reindex, after the last edit
        "events": [{"indexed": "readme", "edits": 4}],  # seen by the supervised service
    }


def test_the_example_imports_nothing_of_tidings_but_its_public_face() -> None:
    imports = [
        line for line in EXAMPLE.read_text().splitlines() if line.startswith(("from ", "import "))
    ]
    assert [line for line in imports if "tidings" in line] == ["from tidings import ("]
