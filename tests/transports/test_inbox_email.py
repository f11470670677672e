"""The inbox's e-mails over real SMTP (aiosmtpd): the follow-up of R16 and the
new-ticket notification of R21 arrive with the right subject, recipients and link."""

from __future__ import annotations

import trio

from tests.transports.helpers import Recorder, parsed, smtp_server
from tidings.actors.brand import Account, Timing
from tidings.actors.inbox import open_inbox
from tidings.engine.store.memory import MemoryStore
from tidings.transports.mail import SmtpMail
from tidings.transports.sms_providers import OutboxSms

ACCOUNT = Account(
    name="Acme",
    support_email="support@acme.example",
    sms_sender="+15550001111",
    public_url="https://support.acme.example",
)
# real clock (SMTP runs in a thread), so the web chat timings are shortened
TIMING = Timing(followup_delay_s=0.3, offline_grace_s=0.1, idle_timeout_s=30)


async def wait_for(recorder: Recorder, n: int) -> None:
    with trio.fail_after(10):
        while len(recorder.received) < n:  # noqa: ASYNC110 - aiosmtpd records from its own thread
            await trio.sleep(0.02)


async def test_r16_r21_emails_arrive_over_smtp() -> None:
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        mail = SmtpMail(f"smtp://127.0.0.1:{port}")
        settings = {
            "notifications": {
                "new_ticket_email": {
                    "enabled": True,
                    "recipients": ["team@acme.example", "lead@acme.example"],
                }
            }
        }
        async with open_inbox(
            MemoryStore(),
            account=ACCOUNT,
            timing=TIMING,
            sms=OutboxSms(),
            mail=mail,
            settings=settings,
        ) as inbox:
            ready = await inbox.chat_hello(None, email="visitor@example.com", name="Vi")
            await inbox.chat_connected(ready.session)
            message = await inbox.chat_message(ready.session, "Where is my parcel?")
            await wait_for(recorder, 1)
            notice = parsed(recorder.received[0])
            assert notice["Subject"] == "New web chat ticket from visitor@example.com"
            assert sorted(recorder.received[0].rcpt_tos) == [
                "lead@acme.example",
                "team@acme.example",
            ]
            assert (
                f"https://support.acme.example/?ticket={message.ticket}"
                in notice.get_body(("plain",)).get_content()
            )

            await inbox.chat_disconnected(ready.session)
            await trio.sleep(0.3)  # past the offline grace
            await inbox.ticket_reply(message.ticket, "It left the warehouse today.", author="a1")  # type: ignore[arg-type]
            await wait_for(recorder, 2)
            followup = parsed(recorder.received[1])
            assert followup["Subject"] == "There's a new message from Acme"
            assert recorder.received[1].rcpt_tos == ["visitor@example.com"]
            assert followup["From"] == "support@acme.example"
            text = followup.get_body(("plain",)).get_content()
            assert f"https://support.acme.example/chat?session={ready.session}" in text
            assert "It left the warehouse today." in text
            html = followup.get_body(("html",)).get_content()
            assert f'href="https://support.acme.example/chat?session={ready.session}"' in html
            await trio.sleep(0.5)
            assert len(recorder.received) == 2  # one follow-up for the burst
