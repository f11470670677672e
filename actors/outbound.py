"""What the inbox needs from the outside to send SMS and e-mail; transports implement it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

Taken = Callable[[str], Awaitable[bool]]
"""Whether a provider id already belongs to another message: an identical text sent
earlier to the same number (an autoresponder twice) must not be taken for this one."""

class DeliveryError(Exception):
    """A provider refused or could not take a message; `permanent` means do not retry.
    `error_code` is the provider's reason, when it gave one (kept on the message)."""

    def __init__(
        self, detail: str, *, permanent: bool = False, error_code: str | None = None
    ) -> None:
        super().__init__(detail)
        self.permanent = permanent
        self.error_code = error_code


@dataclass(slots=True, frozen=True)
class OutboundSms:
    """One SMS to hand to the provider. `message_id` is the engine's own id, stable
    across retries, so that a provider client can avoid sending it twice."""

    message_id: str
    to: str
    sender: str
    body: str
    media: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class SmsReceipt:
    """What the provider answered: its id for the message, and the status it reports
    (`queued`, `sending`, `sent`, …)."""

    provider_id: str
    status: str


class SmsProvider(Protocol):
    """Sends SMS. `send` returns once the provider has taken the message (retrying
    transient failures itself) or raises `DeliveryError`. `find` answers whether the
    provider already has `sms` (same to, from and body) from an attempt made at or after
    `since` (epoch seconds): its receipt, or None; it raises `DeliveryError` when it
    cannot tell, so an SMS whose fate is unknown is never sent again blindly."""

    async def send(self, sms: OutboundSms) -> SmsReceipt: ...

    async def find(
        self, sms: OutboundSms, since: float, *, taken: Taken | None = None
    ) -> SmsReceipt | None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True, frozen=True)
class Email:
    """One e-mail: plain text and HTML alternatives."""

    sender: str
    to: tuple[str, ...]
    subject: str
    text: str
    html: str
    headers: dict[str, str] = field(default_factory=dict)


class Mailer(Protocol):
    """Sends e-mail. `send` returns once the server accepted it or raises `DeliveryError`."""

    async def send(self, email: Email) -> None: ...

    async def aclose(self) -> None: ...
