"""A real server on port 0 for the transport tests (real clock, memory store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tidings.transports.config import load_config
from tidings.transports.server import Running, running_server

AUTH_TOKEN = "twilio-secret"
AGENT_TOKEN = "agent-token"


def make_config(**overrides: Any) -> Any:
    """A test config: memory store, port 0, a signed webhook, agents of several roles."""
    import msgspec

    config = load_config(None, {"server.port": 0, "server.store": "memory://"})
    raw = msgspec.to_builtins(config)
    raw["sms"].update(sender="+15550001111", auth_token=AUTH_TOKEN)
    raw["email"]["support_address"] = "support@acme.example"
    raw["agents"] = [
        {"id": "a1", "name": "Sam", "role": "support", "token": AGENT_TOKEN},
        {"id": "a2", "name": "Ana", "role": "analyst", "token": "analyst-token"},
    ]
    raw["api"]["keys"] = ["api-key"]
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return msgspec.convert(raw, type=type(config))


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    """A running server."""
    async with running_server(make_config()) as running:
        yield running
