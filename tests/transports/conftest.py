"""A real server on port 0 for the transport tests (real clock, memory store), and the
store that crash tests kill a server on and start the next one on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.transports.helpers import make_config
from tidings.transports.server import Running, running_server


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    """A running server."""
    async with running_server(make_config()) as running:
        yield running


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store a killed server and its successor share: a SQLite file, or the test's
    own redis-server (AOF with appendfsync always; see tests/redis_server.py)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crash.db'}"
    url: str = request.getfixturevalue("redis_url")
    return url
