"""Outbound e-mail: the outbox, and SMTP against a real aiosmtpd server on a free port."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.transports.helpers import Recorder, free_port, parsed, smtp_server
from tidings.actors.outbound import DeliveryError, Email, Mailer
from tidings.transports.mail import (
    OutboxMail,
    SmtpMail,
    SmtpSettings,
    build_message,
    parse_smtp_url,
)

NOW = datetime(2025, 3, 4, 15, 30, 0, tzinfo=UTC)
EMAIL = Email(
    sender="Acme Support <support@acme.example>",
    to=("visitor@example.com",),
    subject="There's a new message from Acme — ciao 👋",
    text="Sam wrote: your order has shipped.\nReply: https://support.acme.example/chat?session=abc",
    html='<p>Sam wrote: <b>your order has shipped</b> 📦</p><a href="https://support.acme.example/chat?session=abc">Reply</a>',
)


# ---------------------------------------------------------------- outbox


async def test_outbox_records_every_email() -> None:
    outbox: Mailer = OutboxMail()
    await outbox.send(EMAIL)
    await outbox.send(EMAIL)
    assert isinstance(outbox, OutboxMail) and list(outbox.sent) == [EMAIL, EMAIL]
    await outbox.aclose()


async def test_outbox_failures_can_be_injected() -> None:
    outbox = OutboxMail()
    outbox.fail_next(DeliveryError("down", permanent=True))
    with pytest.raises(DeliveryError):
        await outbox.send(EMAIL)
    await outbox.send(EMAIL)
    assert list(outbox.sent) == [EMAIL]


# ---------------------------------------------------------------- URL and message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.acme.example", SmtpSettings("mail.acme.example", 25)),
        ("smtp://127.0.0.1:2525", SmtpSettings("127.0.0.1", 2525)),
        ("smtps://mail.acme.example", SmtpSettings("mail.acme.example", 465, implicit_tls=True)),
        (
            "smtp://user%40acme.example:p%3Ass%2Fw@mail:587?starttls=true",
            SmtpSettings(
                "mail", 587, starttls=True, username="user@acme.example", password="p:ss/w"
            ),
        ),
        (
            "smtps://u:@mail:1465",
            SmtpSettings("mail", 1465, implicit_tls=True, username="u", password=""),
        ),
    ],
)
def test_smtp_url_is_parsed(url: str, expected: SmtpSettings) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "outbox",
        "http://mail",
        "smtp://",
        "smtp://mail:99999",
        "smtp://mail:x",
        "smtps://m?starttls=1",
        "smtp://m?tls=1",
    ],
)
def test_bad_smtp_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_smtp_url(url)


def test_message_has_headers_and_both_parts() -> None:
    message = build_message(EMAIL, now=NOW)
    assert message["From"] == EMAIL.sender
    assert message["To"] == "visitor@example.com"
    assert message["Subject"] == EMAIL.subject
    assert message["Date"] == "Tue, 04 Mar 2025 15:30:00 +0000"
    assert message["Message-ID"].endswith("@acme.example>")
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == EMAIL.text
    assert html is not None and html.get_content().strip() == EMAIL.html


def test_text_only_email_is_a_single_part() -> None:
    message = build_message(
        Email(sender="a@b.example", to=("c@d.example",), subject="s", text="t", html=""), now=NOW
    )
    assert message.get_content_type() == "text/plain"


def test_extra_headers_are_added_or_replace() -> None:
    email = Email(
        sender=EMAIL.sender,
        to=EMAIL.to,
        subject="s",
        text="t",
        html="",
        headers={"Reply-To": "agent@acme.example", "Message-ID": "<fixed@acme.example>"},
    )
    message = build_message(email, now=NOW)
    assert message["Reply-To"] == "agent@acme.example"
    assert message.get_all("Message-ID") == ["<fixed@acme.example>"]


# ---------------------------------------------------------------- SMTP, real server


async def test_smtp_delivers_text_and_html_to_the_server() -> None:
    recorder = Recorder()
    email = Email(
        sender=EMAIL.sender,
        to=("Visitor <visitor@example.com>", "second@example.com"),
        subject=EMAIL.subject,
        text=EMAIL.text,
        html=EMAIL.html,
    )
    async with smtp_server(recorder) as port:
        mailer = SmtpMail(f"smtp://127.0.0.1:{port}", timeout_s=5, now=lambda: NOW)
        await mailer.send(email)
        await mailer.aclose()
    (envelope,) = recorder.received
    assert envelope.mail_from == "support@acme.example"
    assert envelope.rcpt_tos == ["visitor@example.com", "second@example.com"]
    message = parsed(envelope)
    assert message["Subject"] == EMAIL.subject
    assert message["From"] == EMAIL.sender
    assert message["To"] == "Visitor <visitor@example.com>, second@example.com"
    assert message["Date"] == "Tue, 04 Mar 2025 15:30:00 +0000"
    assert message["Message-ID"]
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == EMAIL.text
    assert html is not None and html.get_content().strip() == EMAIL.html


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"user@acme.example", b"p@ss:w")
    return AuthResult(success=ok, handled=False)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_logs_in_with_the_url_credentials() -> None:
    recorder = Recorder()
    async with smtp_server(
        recorder, authenticator=_authenticator, auth_required=True, auth_require_tls=False
    ) as port:
        good = SmtpMail(f"smtp://user%40acme.example:p%40ss%3Aw@127.0.0.1:{port}", timeout_s=5)
        await good.send(EMAIL)
        bad = SmtpMail(f"smtp://user%40acme.example:wrong@127.0.0.1:{port}", timeout_s=5)
        with pytest.raises(DeliveryError) as info:
            await bad.send(EMAIL)
    assert len(recorder.received) == 1
    assert info.value.permanent  # 535: retrying with the same password cannot help
    assert "535" in str(info.value)


async def test_smtp_refused_recipient_is_permanent() -> None:
    recorder = Recorder(refuse_rcpt={"visitor@example.com": "550 5.1.1 No such user"})
    async with smtp_server(recorder) as port:
        with pytest.raises(DeliveryError) as info:
            await SmtpMail(f"smtp://127.0.0.1:{port}", timeout_s=5).send(EMAIL)
    assert info.value.permanent
    assert "550" in str(info.value) and "visitor@example.com" in str(info.value)
    assert recorder.received == []


async def test_smtp_some_recipients_refused_still_sends_to_the_others() -> None:
    recorder = Recorder(refuse_rcpt={"gone@example.com": "550 5.1.1 No such user"})
    email = Email(
        sender="support@acme.example",
        to=("gone@example.com", "ok@example.com"),
        subject="s",
        text="t",
        html="",
    )
    async with smtp_server(recorder) as port:
        await SmtpMail(f"smtp://127.0.0.1:{port}", timeout_s=5).send(email)
    (envelope,) = recorder.received
    assert envelope.rcpt_tos == ["ok@example.com"]


async def test_smtp_4xx_is_transient() -> None:
    recorder = Recorder(data_answer="451 4.3.0 Try again later")
    async with smtp_server(recorder) as port:
        with pytest.raises(DeliveryError) as info:
            await SmtpMail(f"smtp://127.0.0.1:{port}", timeout_s=5).send(EMAIL)
    assert not info.value.permanent
    assert "451" in str(info.value)


async def test_smtp_5xx_on_data_is_permanent() -> None:
    recorder = Recorder(data_answer="554 5.6.0 Message rejected")
    async with smtp_server(recorder) as port:
        with pytest.raises(DeliveryError) as info:
            await SmtpMail(f"smtp://127.0.0.1:{port}", timeout_s=5).send(EMAIL)
    assert info.value.permanent


async def test_smtp_unreachable_server_is_transient() -> None:
    mailer = SmtpMail(f"smtp://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(DeliveryError) as info:
        await mailer.send(EMAIL)
    assert not info.value.permanent


async def test_smtp_header_with_line_break_is_permanent() -> None:
    email = Email(
        sender="support@acme.example",
        to=("a@example.com",),
        subject="s\r\nBcc: x@evil.example",
        text="t",
        html="",
    )
    with pytest.raises(DeliveryError) as info:
        await SmtpMail("smtp://127.0.0.1:1").send(email)
    assert info.value.permanent


async def test_smtp_no_recipient_is_permanent() -> None:
    email = Email(sender="support@acme.example", to=(), subject="s", text="t", html="")
    with pytest.raises(DeliveryError) as info:
        await SmtpMail("smtp://127.0.0.1:1").send(email)
    assert info.value.permanent


@contextmanager
def self_signed(tmp_path: Path) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """A server context with a fresh self-signed certificate for 127.0.0.1 and a client
    context that trusts it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    yield server, client


async def test_smtps_sends_over_tls(tmp_path: Path) -> None:
    recorder = Recorder()
    with self_signed(tmp_path) as (server_context, client_context):
        async with smtp_server(recorder, ssl_context=server_context) as port:
            mailer = SmtpMail(f"smtps://127.0.0.1:{port}", timeout_s=5, ssl_context=client_context)
            await mailer.send(EMAIL)
            untrusting = SmtpMail(f"smtps://127.0.0.1:{port}", timeout_s=5)
            with pytest.raises(DeliveryError) as info:
                await untrusting.send(EMAIL)
    assert len(recorder.received) == 1
    assert parsed(recorder.received[0])["Subject"] == EMAIL.subject
    assert "certificate" in str(info.value).lower()
