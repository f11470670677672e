"""tidings' benchmarks: `python -m tidings.bench --help`; the harness API is in `tidings.bench.harness`."""

from tidings.bench import (  # noqa: F401  (importing a scenario module registers it)
    actors,
    chaos,
    cluster,
    fuzz,
    pipeline,
    recovery,
    search,
    timers,
    webhook,
    websocket,
)
from tidings.bench.harness import SCENARIOS, Progress, Row, main, row, scenario

__all__ = ["SCENARIOS", "Progress", "Row", "main", "row", "scenario"]
