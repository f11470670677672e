"""A real server on port 0 for the transport tests (real clock, memory store)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.transports.helpers import make_config
from tidings.transports.server import Running, running_server


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    """A running server."""
    async with running_server(make_config()) as running:
        yield running
