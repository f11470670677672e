"""Outbound SMS providers (PROTOCOL.md, "Outbound SMS provider `twilio`"): the built-in
outbox, which records messages instead of sending them, and a client of Twilio's
Messages REST API (or any service that speaks it, at a configurable base URL).

On double sends: Twilio's Messages API has no idempotency key for REST requests (its
`I-Twilio-Idempotency-Token` header is on the webhooks Twilio sends, not on requests it
receives). `TwilioSms` still sends the engine's `message_id` as `Idempotency-Key`, which
a compatible provider or a proxy may honour and Twilio ignores. A request that timed out
or lost its connection after it was written may have created the message, so before
posting again `TwilioSms` looks for it in the provider's list (`find`: `GET
Messages.json?To=…&From=…&DateSent>=…`, matched on to, from, body and creation time) and
takes the receipt it finds instead (PROTOCOL.md, *Delivery guarantees*). A 5xx or 429
answer means the provider did not create the message, and a failure to connect means
the request never left: those are posted again at once.
"""

from __future__ import annotations

import base64
import math
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlencode, urlsplit

import msgspec
import trio

from tidings.actors.outbound import DeliveryError, OutboundSms, SmsReceipt, Taken
from tidings.transports.provider_http import (
    Answer,
    Exchange,
    NoAnswer,
    NotSent,
    ProviderHttp,
    Request,
)
from tidings.transports.release import version

__all__ = ["KEPT", "OutboxSms", "TwilioError", "TwilioSms"]


KEPT = 10_000  # what the built-in outboxes remember, newest first: a server runs for months


class OutboxSms:
    """The built-in provider: every SMS is recorded in `sent` (oldest first, the newest
    `kept`) and answered `sent` with provider id `outbox-<message_id>`, nothing leaves
    the machine. Sending the same `message_id` again returns the first receipt and
    records nothing new (for the newest `kept` ids). `fail_next` makes the next sends
    raise, for tests of failure handling."""

    def __init__(self, kept: int = KEPT) -> None:
        self.sent: deque[OutboundSms] = deque(maxlen=kept)
        self._kept = kept
        self._receipts: dict[str, SmsReceipt] = {}  # oldest first
        self._failures: deque[DeliveryError] = deque()

    def fail_next(self, error: DeliveryError, times: int = 1) -> None:
        """Make the next `times` sends raise `error` instead of recording the SMS."""
        self._failures.extend([error] * times)

    def receipt(self, message_id: str) -> SmsReceipt | None:
        """The receipt given for `message_id`, None if it was never sent."""
        return self._receipts.get(message_id)

    async def find(
        self, sms: OutboundSms, since: float, *, taken: Taken | None = None
    ) -> SmsReceipt | None:
        """The receipt of `sms` if this outbox recorded it (it keeps what it sent, by
        message id, so `taken` is not needed)."""
        await trio.lowlevel.checkpoint()
        return self._receipts.get(sms.message_id)

    async def send(self, sms: OutboundSms) -> SmsReceipt:
        """Record `sms` and answer `sent`."""
        await trio.lowlevel.checkpoint()
        if self._failures:
            raise self._failures.popleft()
        receipt = self._receipts.get(sms.message_id)
        if receipt is None:
            receipt = SmsReceipt(provider_id=f"outbox-{sms.message_id}", status="sent")
            self._receipts[sms.message_id] = receipt
            if len(self._receipts) > self._kept:
                del self._receipts[next(iter(self._receipts))]
            self.sent.append(sms)
        return receipt

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()


class TwilioError(DeliveryError):
    """Twilio (or a compatible provider) refused or could not take a message.
    `http_status` and `code` (Twilio's error code) are None when no answer came."""

    def __init__(
        self,
        detail: str,
        *,
        permanent: bool,
        http_status: int | None = None,
        code: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(
            detail, permanent=permanent, error_code=None if code is None else str(code)
        )
        self.http_status = http_status
        self.code = code
        self.attempts = attempts


class _Created(msgspec.Struct):
    sid: str
    status: str = "queued"


class _Listed(msgspec.Struct):
    """A message of the provider's list (the fields matched on)."""

    sid: str
    to: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    body: str | None = None
    status: str = "queued"
    date_created: str | None = None
    messaging_service_sid: str | None = None


class _Page(msgspec.Struct):
    messages: list[_Listed] = []


# A message the provider lists is taken for ours when created at most this long before
# the attempt began (the provider's clock and ours differ a little).
CLOCK_SKEW_S = 300.0


class _Refusal(msgspec.Struct):
    code: int | None = None
    message: str = ""
    more_info: str = ""


# 408 is a timeout of the request itself and 429 asks to slow down: both are worth
# retrying although they are 4xx. Every 5xx is retried.
_RETRY_4XX = frozenset({408, 429})


class TwilioSms:
    """Sends SMS through Twilio's `POST /2010-04-01/Accounts/{sid}/Messages.json`.

    Transient failures — 5xx, 408, 429, timeouts, connection errors — are retried up to
    `max_attempts` times in all, with exponential backoff (`backoff_initial_s` doubling
    up to `backoff_max_s`, each wait jittered between half and all of it, or the
    provider's `Retry-After`), and never beyond `total_timeout_s` from the first try.
    Other 4xx answers raise a permanent `TwilioError` at once. Requests go through
    `http`, by default a `ProviderHttp` of `base_url` (one given is not closed by
    `aclose`). A `ValueError` says that `base_url` is not http(s). With
    `messaging_service_sid`, messages name that Messaging Service (`MessagingServiceSid`)
    instead of a sender (`From`): the provider picks the number from the service's pool.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str = "https://api.twilio.com",
        status_callback_url: str | None = None,
        http: Exchange | None = None,
        *,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        request_timeout_s: float = 10.0,
        total_timeout_s: float = 30.0,
        jitter: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
        messaging_service_sid: str = "",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._owns_http = http is None
        self._http = http if http is not None else ProviderHttp(base_url)
        path = f"/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"
        self._url = base_url.rstrip("/") + path
        self._path = urlsplit(self._url).path
        basic = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        # every request's headers but the idempotency key, built once
        self._headers = [
            (b"Authorization", f"Basic {basic}".encode()),
            (b"Accept", b"application/json"),
            (b"User-Agent", f"tidings/{version()}".encode()),
        ]
        self._status_callback_url = status_callback_url
        self._max_attempts = max_attempts
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._request_timeout_s = request_timeout_s
        self._total_timeout_s = total_timeout_s
        self._jitter = jitter
        self._wall_clock = wall_clock
        self._messaging_service_sid = messaging_service_sid

    @property
    def messages_url(self) -> str:
        """The URL messages are posted to."""
        return self._url

    def _form(self, sms: OutboundSms) -> bytes:
        fields = [("To", sms.to), self._sender_field(sms)]
        if sms.body or not sms.media:
            fields.append(("Body", sms.body))
        fields.extend(("MediaUrl", url) for url in sms.media)
        if self._status_callback_url:
            fields.append(("StatusCallback", self._status_callback_url))
        return urlencode(fields).encode()

    def _sender_field(self, sms: OutboundSms) -> tuple[str, str]:
        """Who a message is from: the Messaging Service when one is set, else `From`."""
        if self._messaging_service_sid:
            return ("MessagingServiceSid", self._messaging_service_sid)
        return ("From", sms.sender)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_max_s, self._backoff_initial_s * 2.0 ** (attempt - 1))
        # "Equal jitter": never less than half the step, so retries do spread out but
        # do not collapse to an immediate retry.
        return ceiling / 2 + self._jitter() * ceiling / 2

    async def send(self, sms: OutboundSms) -> SmsReceipt:
        """Post `sms` and return Twilio's `sid` and `status`; raise `TwilioError`
        (a `DeliveryError`) when it is refused or every attempt failed."""
        headers = [
            *self._headers,
            (b"Content-Type", b"application/x-www-form-urlencoded"),
            (b"Idempotency-Key", sms.message_id.encode()),
        ]
        post = Request(b"POST", self._path.encode(), headers, self._form(sms))
        deadline = trio.current_time() + self._total_timeout_s
        started = self._wall_clock()
        last_failure = "no attempt made"
        last_status: int | None = None
        in_doubt = False  # a request may have reached the provider without an answer
        attempt = 0
        while attempt < self._max_attempts:
            attempt += 1
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                break
            timeout = min(self._request_timeout_s, remaining)
            retry_after: float | None = None
            if in_doubt:
                found = await self._find_before_retry(sms, started, timeout, attempt)
                if found is not None:
                    return found
            try:
                response = await self._http.request(post, timeout)
            except NotSent as e:  # the request never left
                last_failure, last_status = f"connection failed ({e})", None
            except NoAnswer as e:
                last_failure = f"timed out ({e})" if e.timed_out else f"connection failed ({e})"
                last_status = None
                in_doubt = True
            else:
                status = response.status
                if 200 <= status < 300:
                    return self._receipt(response, attempt)
                if status < 500 and status not in _RETRY_4XX:
                    raise self._refusal(response, attempt)
                last_failure, last_status = self._describe(response), status
                retry_after = _retry_after_s(response)
            if attempt >= self._max_attempts:
                break
            delay = self._backoff(attempt) if retry_after is None else retry_after
            if trio.current_time() + delay >= deadline:
                break
            await trio.sleep(delay)
        raise TwilioError(
            f"the SMS provider did not take the message after {attempt} attempt(s): {last_failure}",
            permanent=False,
            http_status=last_status,
            attempts=attempt,
        )

    async def _find_before_retry(
        self, sms: OutboundSms, since: float, timeout: float, attempt: int
    ) -> SmsReceipt | None:
        """`find`, as a step of `send`: a lookup that fails leaves the SMS in doubt, so
        `send` gives up for now (transient) rather than post it again."""
        try:
            return await self.find(sms, since, timeout=timeout)
        except TwilioError as e:
            raise TwilioError(
                f"the SMS provider may have taken the message; it could not be looked up: {e}",
                permanent=False,
                http_status=e.http_status,
                attempts=attempt - 1,
            ) from e

    async def find(
        self,
        sms: OutboundSms,
        since: float,
        *,
        taken: Taken | None = None,
        timeout: float | None = None,
    ) -> SmsReceipt | None:
        """The provider's receipt for `sms` if a message to the same number, from the same
        sender (or Messaging Service), with the same body, was created from `since` (epoch seconds, less
        `CLOCK_SKEW_S`) on, and whose sid `taken` does not give to another message; None if the
        provider has none. Reads the first page (newest
        first) of `GET Messages.json?To=…&From=…&DateSent>=YYYY-MM-DD`, then, when that
        has none, of the list without the date: a message the provider still queues has
        no `date_sent` yet, so the date filter leaves it out. Raises a transient
        `TwilioError` when the provider cannot be asked."""
        day = datetime.fromtimestamp(since - CLOCK_SKEW_S, UTC).date().isoformat()
        # a service's message is from whichever number the provider picked: listed by
        # `To` alone and matched on the service
        numbers = {"To": sms.to, "PageSize": "50"}
        if not self._messaging_service_sid:
            numbers["From"] = sms.sender
        # `DateSent>=YYYY-MM-DD` in the query string is the parameter `DateSent>`
        for params in ({**numbers, "DateSent>": day}, numbers):
            for listed in await self._list(params, timeout or self._request_timeout_s):
                ours = self._sent_by_us(listed, sms)
                if not (ours and _same_message(listed, sms, since - CLOCK_SKEW_S)):
                    continue
                if taken is None or not await taken(listed.sid):
                    return SmsReceipt(provider_id=listed.sid, status=listed.status)
        return None

    def _sent_by_us(self, listed: _Listed, sms: OutboundSms) -> bool:
        """Whether `listed` came from the sender of `sms`: our Messaging Service when one
        is set, else its `From`."""
        if self._messaging_service_sid:
            return listed.messaging_service_sid == self._messaging_service_sid
        return listed.from_ == sms.sender

    async def _list(self, params: dict[str, str], timeout: float) -> list[_Listed]:
        """The first page of the provider's messages matching `params`."""
        get = Request(b"GET", f"{self._path}?{urlencode(params)}".encode(), self._headers)
        try:
            response = await self._http.request(get, timeout)
        except (NotSent, NoAnswer) as e:
            raise TwilioError(
                f"cannot look up the message at the SMS provider: {type(e).__name__}: {e}",
                permanent=False,
            ) from e
        if response.status != 200:
            raise TwilioError(
                f"cannot look up the message at the SMS provider ({self._describe(response)})",
                permanent=False,
                http_status=response.status,
            )
        try:
            return msgspec.json.decode(response.content, type=_Page).messages
        except msgspec.DecodeError as e:
            raise TwilioError(
                f"the SMS provider's message list is unreadable: {e}", permanent=False
            ) from None

    def _receipt(self, response: Answer, attempts: int) -> SmsReceipt:
        try:
            created = msgspec.json.decode(response.content, type=_Created)
        except msgspec.DecodeError as e:
            # The provider may have taken the message: retrying could send it twice.
            raise TwilioError(
                f"the SMS provider answered {response.status} without a message sid: {e}",
                permanent=True,
                http_status=response.status,
                attempts=attempts,
            ) from None
        return SmsReceipt(provider_id=created.sid, status=created.status)

    @staticmethod
    def _parse_refusal(response: Answer) -> _Refusal:
        try:
            return msgspec.json.decode(response.content, type=_Refusal)
        except msgspec.DecodeError:
            return _Refusal(message=response.text[:200].strip())

    def _describe(self, response: Answer) -> str:
        refusal = self._parse_refusal(response)
        text = f"HTTP {response.status}"
        if refusal.code is not None:
            text += f", error {refusal.code}"
        if refusal.message:
            text += f": {refusal.message}"
        return text

    def _refusal(self, response: Answer, attempts: int) -> TwilioError:
        refusal = self._parse_refusal(response)
        return TwilioError(
            f"the SMS provider refused the message ({self._describe(response)})",
            permanent=True,
            http_status=response.status,
            code=refusal.code,
            attempts=attempts,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections if this provider made their pool."""
        if self._owns_http:
            await self._http.aclose()


def _retry_after_s(response: Answer) -> float | None:
    """The provider's `Retry-After` in seconds (delta or HTTP date), None if absent."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        date = response.headers.get("date")
        try:
            now = parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            now = None
        if now is None or when.tzinfo is None or now.tzinfo is None:
            return None
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _same_message(listed: _Listed, sms: OutboundSms, earliest: float) -> bool:
    """Whether the provider's `listed` message is `sms`, created at `earliest` or later
    (a message whose time cannot be read is judged by the other fields)."""
    if (listed.to, listed.body or "") != (sms.to, sms.body):
        return False
    if listed.date_created is None:
        return True
    try:
        created = parsedate_to_datetime(listed.date_created)
    except (TypeError, ValueError):
        return True
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.timestamp() >= earliest
