"""Outbound e-mail (follow-ups R16, new-ticket notices R21): the built-in outbox, which
records e-mails instead of sending them, and an SMTP client configured by a URL
(`email.smtp_url` of PROTOCOL.md).

SMTP URLs: `smtp://[user:password@]host[:port]` (port 25; add `?starttls=true` to
upgrade the connection with STARTTLS, as port 587 servers usually require) and
`smtps://[user:password@]host[:port]` (TLS from the start, port 465). User and
password are percent-decoded.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from tidings.actors.outbound import DeliveryError, Email
from tidings.transports.sms_providers import KEPT

__all__ = ["OutboxMail", "SmtpMail", "SmtpSettings", "build_message", "parse_smtp_url"]

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to connect, as read from an SMTP URL."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpSettings:
    """Read `smtp://user:pass@host:port` or `smtps://…`; raise ValueError on anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("an SMTP URL starts with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("the SMTP URL has no host")
    implicit_tls = parts.scheme == "smtps"
    port = parts.port  # raises ValueError for a port that is not a number or out of range
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls"}
    if unknown:
        raise ValueError(f"unknown SMTP URL option {sorted(unknown)[0]!r}")
    starttls = query.get("starttls", "").lower() in _TRUE
    if starttls and implicit_tls:
        raise ValueError("starttls is for smtp://; smtps:// is already encrypted")
    return SmtpSettings(
        host=parts.hostname,
        port=port if port is not None else (465 if implicit_tls else 25),
        implicit_tls=implicit_tls,
        starttls=starttls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _domain_of(address: str) -> str:
    domain = parseaddr(address)[1].rpartition("@")[2]
    return domain or "localhost"


def build_message(
    email: Email, *, now: datetime, message_domain: str | None = None
) -> EmailMessage:
    """The MIME message for `email`: From, To, Subject, Date, Message-ID, then
    `email.headers` (which may replace any of these), and a text part with an HTML
    alternative (text only when `html` is empty). Raises ValueError for a header value
    that cannot be sent (a line break, for instance)."""
    msg = EmailMessage()
    msg["From"] = email.sender
    msg["To"] = ", ".join(email.to)
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime(now if now.tzinfo else now.replace(tzinfo=UTC))
    msg["Message-ID"] = make_msgid(domain=message_domain or _domain_of(email.sender))
    for name, value in email.headers.items():
        if name in msg:
            msg.replace_header(name, value)
        else:
            msg[name] = value
    msg.set_content(email.text)
    if email.html:
        msg.add_alternative(email.html, subtype="html")
    return msg


class OutboxMail:
    """The built-in mailer: every e-mail is recorded in `sent` (oldest first, the newest
    `kept`) and nothing leaves the machine. `fail_next` makes the next sends raise, for
    tests."""

    def __init__(self, kept: int = KEPT) -> None:
        self.sent: deque[Email] = deque(maxlen=kept)
        self._failures: deque[DeliveryError] = deque()

    def fail_next(self, error: DeliveryError, times: int = 1) -> None:
        """Make the next `times` sends raise `error` instead of recording the e-mail."""
        self._failures.extend([error] * times)

    async def send(self, email: Email) -> None:
        """Record `email`."""
        await trio.lowlevel.checkpoint()
        if self._failures:
            raise self._failures.popleft()
        self.sent.append(email)

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()


def _is_permanent(code: int) -> bool:
    return 500 <= code <= 599


def _detail(code: int, message: bytes | str) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    return f"{code} {text}".strip()


class SmtpMail:
    """Sends e-mail to the SMTP server of `url` (see `parse_smtp_url`), one connection
    per e-mail, in a worker thread. The server's 5xx answers raise a permanent
    `DeliveryError`; 4xx answers, timeouts and connection failures a transient one.
    When the server refuses some recipients but takes the others, `send` returns
    (the e-mail went out) and logs the refused ones."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = parse_smtp_url(url)
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context
        # Not socket.getfqdn(), smtplib's default: it can stall on a slow resolver.
        self._local_hostname = local_hostname or socket.gethostname() or "localhost"
        self._now = now or (lambda: datetime.now(UTC))

    async def send(self, email: Email) -> None:
        """Send `email`; return once the server has accepted it."""
        if not email.to:
            raise DeliveryError("an e-mail needs at least one recipient", permanent=True)
        try:
            msg = build_message(email, now=self._now())
        except (ValueError, TypeError) as e:
            raise DeliveryError(f"cannot build the e-mail: {e}", permanent=True) from e
        from_addr = parseaddr(email.sender)[1] or email.sender
        to_addrs = [parseaddr(a)[1] or a for a in email.to]
        refused = await trio.to_thread.run_sync(self._send_blocking, msg, from_addr, to_addrs)
        if refused:
            log.warning(
                "mail server refused some recipients of %r: %s",
                email.subject,
                "; ".join(f"{rcpt}: {_detail(*answer)}" for rcpt, answer in refused.items()),
            )

    def _send_blocking(
        self, msg: EmailMessage, from_addr: str, to_addrs: list[str]
    ) -> dict[str, tuple[int, bytes]]:
        s = self.settings
        try:
            smtp: smtplib.SMTP
            if s.implicit_tls:
                smtp = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    local_hostname=self._local_hostname,
                    timeout=self._timeout_s,
                    context=self._ssl_context or ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(
                    s.host, s.port, local_hostname=self._local_hostname, timeout=self._timeout_s
                )
            with smtp:
                if s.starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                if s.username is not None:
                    smtp.login(s.username, s.password or "")
                return smtp.send_message(msg, from_addr, to_addrs)
        except smtplib.SMTPRecipientsRefused as e:
            answers = e.recipients
            permanent = all(_is_permanent(code) for code, _ in answers.values())
            detail = "; ".join(f"{rcpt}: {_detail(*answer)}" for rcpt, answer in answers.items())
            raise DeliveryError(
                f"the mail server refused every recipient: {detail}", permanent=permanent
            ) from None
        except smtplib.SMTPResponseException as e:
            raise DeliveryError(
                f"the mail server answered {_detail(e.smtp_code, e.smtp_error)}",
                permanent=_is_permanent(e.smtp_code),
            ) from None
        except smtplib.SMTPNotSupportedError as e:
            raise DeliveryError(
                f"the mail server cannot take this e-mail: {e}", permanent=True
            ) from None
        except (smtplib.SMTPException, OSError) as e:
            # Disconnections, timeouts, refused connections, TLS failures: try again later.
            raise DeliveryError(
                f"cannot reach the mail server {s.host}:{s.port}: {type(e).__name__}: {e}"
            ) from None

    async def aclose(self) -> None:
        """Nothing to release: each e-mail has its own connection."""
        await trio.lowlevel.checkpoint()
