"""The courier: takes outbound SMS and e-mail from the durable outbox to the providers.

Actors put a job into the outbox inside the batch that records the message, so a message
is never recorded without its job nor sent without being recorded, and tell the courier
(`queued()`) after that commit. The courier works the outbox oldest first: SMS go to the
`SmsProvider` and the provider's answer (`Sent`) goes to the message's owner, its ticket or
else its profile, which records the provider id and status and removes the job in one
batch; e-mails go to the `Mailer` and their completion (`Mailed`) to the ticket that
queued them, which removes the job. A job whose provider fails for now is tried again
later; the outbox survives restarts, so every message goes out at least once (R30).

Keys: an `outbox:{job}` record and its `outbox` index entry belong to the actor that
queued the job (it writes and removes both); the courier only reads them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import msgspec
import trio

from tidings.actors.brand import Account
from tidings.actors.handoff import message_owner
from tidings.actors.model import Message, Status
from tidings.actors.outbound import DeliveryError, Email, Mailer, OutboundSms, SmsProvider
from tidings.engine import ActorContext, Batch, Request, WallClock

log = logging.getLogger("tidings.courier")

OUTBOX = "outbox"


class SmsJob(msgspec.Struct, tag="sms"):
    """An SMS to send for `profile`'s message `message` (of `ticket`, if any: its owner)."""

    message: str
    profile: str
    to: str
    sender: str
    body: str
    media: list[str]
    ticket: str | None = None


class EmailJob(msgspec.Struct, tag="email"):
    """An e-mail to send, queued by `ticket` (None: by a version that did not say)."""

    sender: str
    to: list[str]
    subject: str
    text: str
    html: str
    ticket: str | None = None


Job = SmsJob | EmailJob
# what a provider may report when it takes an SMS; anything else counts as queued
_PROVIDER_STATUS: dict[str, Status] = {s: s for s in ("queued", "sending", "sent", "delivered")}
_decode_job = msgspec.json.Decoder(Job).decode


class Sent(Request[None]):
    """What the SMS provider answered for a message (to the message's owner)."""

    message: str
    job: str
    provider_id: str | None
    status: Status


class Mailed(Request[None]):
    """The e-mail job `job` is done, sent or failed for good (to the ticket that queued it)."""

    job: str


def _job_key(job_id: str) -> str:
    return f"outbox:{job_id}"


def remove_job(batch: Batch, job_id: str) -> None:
    """Take a done job out of the outbox (inside the batch that records its outcome)."""
    batch.delete(_job_key(job_id))
    batch.unindex(OUTBOX, job_id)


class Courier:
    """Works the outbox with `workers` concurrent senders."""

    def __init__(
        self,
        account: Account,
        clock: WallClock,
        sms: SmsProvider,
        mail: Mailer,
        *,
        workers: int = 8,
        retry_after: float = 30.0,
    ) -> None:
        self._account = account
        self._clock = clock
        self.sms = sms
        self.mail = mail
        self._workers = workers
        self._retry_after = retry_after
        self._in_flight: set[str] = set()
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.sent = 0
        self.failed = 0

    # -- adding jobs (inside an actor's batch) ---------------------------------------------

    def _add(self, batch: Batch, job_id: str, job: Job) -> None:
        batch.put(_job_key(job_id), msgspec.json.encode(job))
        batch.index(OUTBOX, job_id, self._clock.now(), frozenset())

    def add_sms(self, batch: Batch, message: Message, phone: str) -> None:
        """Queue the SMS `message` to `phone`; its job id is the message id."""
        job = SmsJob(
            message.id,
            message.profile,
            phone,
            self._account.sms_sender,
            message.body,
            list(message.media),
            message.ticket,
        )
        self._add(batch, message.id, job)

    def add_email(self, batch: Batch, job_id: str, email: Email, ticket: str) -> None:
        """Queue `email` for `ticket` under `job_id` (stable, so the same e-mail is queued
        once)."""
        job = EmailJob(email.sender, list(email.to), email.subject, email.text, email.html, ticket)
        self._add(batch, job_id, job)

    def queued(self) -> None:
        """Jobs were committed: look at the outbox again."""
        self._wake.set()

    # -- the service ------------------------------------------------------------------------

    async def run(
        self,
        ctx: ActorContext[Any],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send what is in the outbox of `ctx`'s engine, and whatever is added later,
        until cancelled."""
        store = ctx.store
        send, receive = trio.open_memory_channel[str](math.inf)
        self._in_flight.clear()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self._workers):
                nursery.start_soon(self._worker, ctx, receive)
            task_status.started()
            while True:
                self._wake = trio.Event()
                rows = await store.index_query(OUTBOX, frozenset(), 500, descending=False)
                for job_id, _ in rows:
                    if job_id not in self._in_flight:
                        self._in_flight.add(job_id)
                        send.send_nowait(job_id)
                with trio.move_on_after(self._retry_after):
                    await self._wake.wait()

    async def _worker(
        self, ctx: ActorContext[Any], receive: trio.MemoryReceiveChannel[str]
    ) -> None:
        async for job_id in receive:
            done = await self._deliver(ctx, job_id)
            if done:
                self._in_flight.discard(job_id)
                self._wake.set()
            else:
                self._release_later(job_id)

    def _release_later(self, job_id: str) -> None:
        """Leave a job that failed for now alone until the next retry round."""

        async def release() -> None:
            await trio.sleep(self._retry_after)
            self._in_flight.discard(job_id)

        if self._nursery is not None:
            self._nursery.start_soon(release)

    async def _deliver(self, ctx: ActorContext[Any], job_id: str) -> bool:
        """Send one job; True when it is finished (sent, or failed for good)."""
        raw = await ctx.store.get(_job_key(job_id))
        if raw is None:
            return True
        job = _decode_job(raw)
        if isinstance(job, SmsJob):
            owner = message_owner(job.ticket, job.profile)
            outbound = OutboundSms(job.message, job.to, job.sender, job.body, tuple(job.media))
            try:
                receipt = await self.sms.send(outbound)
            except DeliveryError as exc:
                if not exc.permanent:
                    log.warning("SMS %s not sent yet: %s", job.message, exc)
                    return False
                log.error("SMS %s failed: %s", job.message, exc)
                self.failed += 1
                await ctx.ask(owner, Sent(job.message, job_id, None, "failed"))
                return True
            self.sent += 1
            status = _PROVIDER_STATUS.get(receipt.status, "queued")
            await ctx.ask(owner, Sent(job.message, job_id, receipt.provider_id, status))
            return True
        try:
            await self.mail.send(Email(job.sender, tuple(job.to), job.subject, job.text, job.html))
        except DeliveryError as exc:
            if not exc.permanent:
                log.warning("e-mail %s not sent yet: %s", job_id, exc)
                return False
            log.error("e-mail %s failed: %s", job_id, exc)
            self.failed += 1
        else:
            self.sent += 1
        if job.ticket is not None:
            await ctx.ask(("ticket", job.ticket), Mailed(job_id))
        else:  # queued before jobs named their owner: nobody else will remove it
            batch = Batch()
            remove_job(batch, job_id)
            await ctx.commit(batch)
        return True
