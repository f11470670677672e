"""tidings' benchmarks: `python -m bench --help`; the harness API is in `bench.harness`."""

from bench import actors, pipeline, recovery, timers, webhook, websocket  # noqa: F401  (importing a scenario module registers it)
from bench.harness import SCENARIOS, Progress, Row, main, row, scenario

__all__ = ["SCENARIOS", "Progress", "Row", "main", "row", "scenario"]
