"""R30: the provider's status callback (`POST /sms/status`) keeps its `ErrorCode` on the
message (PROTOCOL.md, *Delivery guarantees*); a code that is no code is left out."""

from __future__ import annotations

import httpx
import pytest
import trio
from twilio.request_validator import RequestValidator

from tests.transports.helpers import AUTH_TOKEN
from tidings.actors import thread
from tidings.transports.server import Running


async def _campaign_sent(server: Running) -> tuple[str, str]:
    """A campaign SMS the built-in outbox took: (message id, provider id)."""
    inbox = server.inbox
    profile = await inbox.upsert_profile({"phone": "+15551230077", "consent": {"marketing": True}})
    message = await inbox.send_message(profile.id, "campaign", "c1", "Sale", "20% off", [])
    with trio.fail_after(5):
        while True:  # the courier handed it to the outbox and its profile recorded that
            stored = await thread.load(inbox.engine.store, message.id)
            if stored is not None and stored.message.provider_id is not None:
                return message.id, stored.message.provider_id
            await trio.sleep(0.01)


@pytest.mark.parametrize(
    ("code", "kept"), [("30003", "30003"), ("<b>", None), ("9" * 40, None), ("", None)]
)
async def test_r30_status_callback_keeps_the_error_code(
    server: Running, code: str, kept: str | None
) -> None:
    message, sid = await _campaign_sent(server)
    url = f"{server.base_url}/sms/status"
    params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": code}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with httpx.AsyncClient() as client:
        r = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert r.status_code == 200
    stored = await thread.load(server.inbox.engine.store, message)
    assert stored is not None
    assert (stored.message.status, stored.message.error_code) == ("undelivered", kept)
