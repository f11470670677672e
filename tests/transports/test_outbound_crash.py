"""R30 outbound across a crash (PROTOCOL.md, *Delivery guarantees*): a real `tidings
serve` is killed while the provider holds its SMS request open; the restarted server
looks the in-doubt SMS up in the provider's list instead of sending it again. Then a
status callback with ErrorCode 21610 withdraws the profile's consent."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import trio
from twilio.request_validator import RequestValidator

from tests.transports.helpers import TWILIO_SID, TWILIO_TOKEN, make_config, twilio_stand_in
from tidings.actors import thread
from tidings.transports.server import running_server

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "crash-api-key"
PHONE = "+15551230000"


@asynccontextmanager
async def serve(config: Path, store: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """`tidings serve` for the block: (its process, its console URL without the slash);
    the block kills or stops it."""
    cmd = [sys.executable, "-m", "tidings.transports.cli", "serve", "--config", str(config),
           "--port", "0", "--store", store]  # fmt: skip
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, cmd, stdout=subprocess.PIPE, cwd=str(ROOT), check=False)
        )
        assert proc.stdout is not None
        buffer = b""
        with trio.fail_after(30):
            while b"console: " not in buffer or b"\n" not in buffer.split(b"console: ")[1]:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, "the server exited early"
                buffer += chunk
        console = buffer.split(b"console: ")[1].split(b"\n")[0].decode().rstrip("/")
        try:
            yield proc, console
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                await proc.wait()


async def test_r30_sms_in_doubt_after_sigkill_is_looked_up_not_sent_again(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'outbound.db'}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with twilio_stand_in(["hold"]) as twilio:
        config = tmp_path / "c.toml"
        config.write_text(
            f'[sms]\nsender = "+15550001111"\nprovider = "twilio"\n'
            f'account_sid = "{TWILIO_SID}"\nauth_token = "{TWILIO_TOKEN}"\n'
            f'base_url = "{twilio.base_url}"\n[api]\nkeys = ["{API_KEY}"]\n'
        )
        async with httpx.AsyncClient(timeout=10) as client:
            async with serve(config, store) as (proc, base):
                r = await client.post(
                    f"{base}/api/profiles",
                    json={"phone": PHONE, "consent": {"transactional": True}},
                    headers=auth,
                )
                profile = r.json()["id"]
                r = await client.post(
                    f"{base}/api/messages",
                    json={"profile": profile, "kind": "campaign", "source_id": "c1",
                          "source_name": "Sale", "body": "20% off today"},
                    headers=auth,
                )  # fmt: skip
                message = r.json()["id"]
                with trio.fail_after(20):
                    await twilio.holding.wait()  # the provider took it and holds the answer
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            assert twilio.posts == 1 and twilio.lookups == []

            async with serve(config, store) as (proc, base):
                with trio.fail_after(20):
                    await twilio.looked_up.wait()  # the restarted courier asks the provider
                    await trio.sleep(0.5)
                assert twilio.posts == 1  # R30: looked up, not sent again
                url = f"{base}/sms/status"
                params = {"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "21610"}
                signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
                r = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
                assert r.status_code == 200
                with trio.fail_after(10):
                    while True:  # an upsert that changes nothing shows the profile
                        r = await client.post(
                            f"{base}/api/profiles", json={"id": profile}, headers=auth
                        )
                        if not r.json()["subscribed"]:
                            break
                        await trio.sleep(0.05)
                assert r.json()["consent"] == {"marketing": False, "transactional": False}
    assert twilio.posts == 1  # no opt-out confirmation either
    (lookup,) = twilio.lookups
    assert (lookup["To"], lookup["From"]) == (PHONE, "+15550001111")
    async with running_server(make_config(**{"server.store": store})) as running:
        stored = await thread.load(running.inbox.engine.store, message)
        assert stored is not None
        assert (stored.message.provider_id, stored.message.status) == ("SM1", "failed")
        assert stored.message.error_code == "21610"
        assert await running.inbox.engine.store.get(f"outbox:{message}") is None
