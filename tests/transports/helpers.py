"""What several transport tests share: the test config and its tokens, and a recording
SMTP server. (Test modules import from here, never from each other or from a conftest.)"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import msgspec
import trio
from aiosmtpd.controller import Controller
from tidings.transports.config import load_config

AUTH_TOKEN = "twilio-secret"
AGENT_TOKEN = "agent-token"
MANAGER_TOKEN = "manager-token"


def make_config(**overrides: Any) -> Any:
    """A test config: memory store, port 0, a signed webhook, agents of several roles."""
    config = load_config(None, {"server.port": 0, "server.store": "memory://"})
    raw = msgspec.to_builtins(config)
    raw["sms"].update(sender="+15550001111", auth_token=AUTH_TOKEN)
    raw["email"]["support_address"] = "support@acme.example"
    raw["agents"] = [
        {"id": "a1", "name": "Sam", "role": "support", "token": AGENT_TOKEN},
        {"id": "a2", "name": "Ana", "role": "analyst", "token": "analyst-token"},
        {"id": "a3", "name": "Max", "role": "manager", "token": MANAGER_TOKEN},
    ]
    raw["api"]["keys"] = ["api-key"]
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return msgspec.convert(raw, type=type(config))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Recorder:
    """An aiosmtpd handler that records what it received and can refuse on command."""

    received: list[Any] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> SMTP answer
    data_answer: str = "250 Message accepted for delivery"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_answer.startswith("250"):
            self.received.append(envelope)
        return self.data_answer


@asynccontextmanager
async def smtp_server(recorder: Recorder, **kwargs: Any) -> AsyncIterator[int]:
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
    await trio.to_thread.run_sync(controller.start)
    try:
        yield port
    finally:
        await trio.to_thread.run_sync(controller.stop)


def parsed(envelope: Any) -> EmailMessage:
    # SMTP carries CRLF line ends; compare with the LF text that was handed over
    raw = envelope.original_content.replace(b"\r\n", b"\n")
    message = message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message
