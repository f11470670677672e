"""R30 across a crash: every inbound SMS answered 200 is there exactly once after kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import trio
from twilio.request_validator import RequestValidator

from tests.transports.helpers import make_config
from tidings.actors import thread
from tidings.transports.server import running_server

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "crash-token"


async def _console_url(proc: trio.Process) -> str:
    assert proc.stdout is not None
    buffer = b""
    with trio.fail_after(20):
        while b"console: " not in buffer or not buffer.split(b"console: ")[1].count(b"\n"):
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, "the server exited early"
            buffer += chunk
    return buffer.split(b"console: ")[1].split(b"\n")[0].decode()


async def test_r30_sigkill_keeps_every_answered_message_exactly_once(
    tmp_path: Path, store_url: str
) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'[sms]\nsender = "+15550001111"\nauth_token = "{TOKEN}"\n')
    answered: list[str] = []
    cmd = [sys.executable, "-m", "tidings.transports.cli", "serve", "--config", str(config_file),
           "--port", "0", "--store", store_url]  # fmt: skip
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, cmd, stdout=subprocess.PIPE, cwd=str(ROOT), check=False)
        )
        base = await _console_url(proc)
        url = base + "sms/inbound"
        validator = RequestValidator(TOKEN)

        async def post(client: httpx.AsyncClient, i: int) -> None:
            params = {"MessageSid": f"SM{i:04d}", "From": "+15551230000", "Body": f"m{i}"}
            headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
            try:
                r = await client.post(url, data=params, headers=headers)
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                answered.append(params["MessageSid"])

        async with httpx.AsyncClient(timeout=5) as client:
            async with trio.open_nursery() as senders:
                for i in range(40):
                    senders.start_soon(post, client, i)
                    await trio.sleep(0.005)
                    if i == 25:
                        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert answered, "nothing was answered before the kill"
    config = make_config(**{"server.store": store_url})
    async with running_server(config) as running:
        page = await running.inbox.tickets_list()
        bodies: list[str] = []
        for ticket in page.tickets:
            # the whole thread, not the 50 a ticket view shows: autoresponses are in it too
            log = thread.stream("sms", ticket.profile, ticket.id)
            messages = await thread.last_messages(running.inbox.engine.store, log, 10_000)
            bodies += [m.body for m in messages if m.direction == "inbound"]
    for sid in answered:
        assert bodies.count(f"m{int(sid[2:])}") == 1, sid
