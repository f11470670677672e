"""The courier: takes outbound SMS and e-mail from the durable outbox to the providers.

Actors put a job into the outbox inside the batch that records the message, so a message
is never recorded without its job nor sent without being recorded, and tell the courier
(`queued()`) after that commit. The courier works the outbox oldest first; e-mails go to
the `Mailer` and their completion (`Mailed`) to the ticket that queued them, which
removes the job. A job whose provider fails for now is tried again later; the outbox
survives restarts, so every message goes out (R30).

An SMS goes to the provider once (PROTOCOL.md, *Delivery guarantees*):
- before the first provider call the courier has the message's owner record the
  attempt on the job (`Attempting`, durable), so a job with an attempt and no outcome
  is *in doubt* after a crash or a failed try; an in-doubt job is looked up at the
  provider (`SmsProvider.find`) and sent again only when the provider does not have it;
- the provider's answer (`Sent`) goes to the owner, which records the provider id and
  status and removes the job in one batch; when that ask fails the courier keeps the
  receipt and retries only the recording, never the send;
- a held or scheduled job (`held`) and any in-doubt job ask the profile, the owner of
  consent and blocking, before the provider call (`MayText`); a refusal fails the message
  with `error_code` `not_subscribed` or `blocked`. A fresh reply skips that ask: its
  profile checked consent in the turn that wrote it.

Keys: an `outbox:{job}` record and its `outbox` index entry belong to the actor that
queued the job, the message's owner (it writes, records attempts on, and removes both);
the courier only reads them.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any

import msgspec
import trio

from tidings.actors.brand import Account
from tidings.actors.handoff import message_owner
from tidings.actors.model import Message, MessageKind, Status
from tidings.actors.outbound import (
    DeliveryError,
    Email,
    Mailer,
    OutboundSms,
    SmsProvider,
    SmsReceipt,
)
from tidings.engine import (
    ActorContext,
    Address,
    AskTimeout,
    Batch,
    DeadLettered,
    EngineStopped,
    Request,
    Store,
    WallClock,
)

log = logging.getLogger("tidings.courier")

OUTBOX = "outbox"
PAGE = 64  # outbox rows read at a time when looking for jobs to hand out


class SmsJob(msgspec.Struct, tag="sms"):
    """An SMS to send for `profile`'s message `message` (of `ticket`, if any: its owner)."""

    message: str
    profile: str
    to: str
    sender: str
    body: str
    media: list[str]
    ticket: str | None = None
    needs_consent: bool = True  # False: keyword replies and autoresponses (R19, R20)
    held: bool = False  # held or scheduled: consent and blocking are checked at hand-off
    attempt_at: float | None = None  # when the first provider call began (in doubt after)


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


# kinds sent without SMS consent: keyword confirmations (R19) and autoresponses (R20)
_WITHOUT_CONSENT: frozenset[MessageKind] = frozenset({"keyword", "autoresponder"})
_ASK_FAILED = (AskTimeout, DeadLettered, EngineStopped)


class Sent(Request[None]):
    """What the SMS provider answered for a message, or why it was not sent (to the
    message's owner)."""

    message: str
    job: str
    provider_id: str | None
    status: Status
    error_code: str | None = None


class Attempting(Request[bool]):
    """The courier is about to hand job `job` to the provider (to the message's owner,
    which records it on the job); False when the job is gone."""

    job: str
    at: float


class MayText(Request["str | None"]):
    """May the profile be sent an SMS now (to the profile, the owner of consent and
    blocking)? None, or the reason not: `blocked`, or `not_subscribed` when
    `needs_consent`."""

    needs_consent: bool


class Mailed(Request[None]):
    """The e-mail job `job` is done, sent or failed for good (to the ticket that queued it)."""

    job: str


def _job_key(job_id: str) -> str:
    return f"outbox:{job_id}"


def remove_job(batch: Batch, job_id: str) -> None:
    """Take a done job out of the outbox (inside the batch that records its outcome)."""
    batch.delete(_job_key(job_id))
    batch.unindex(OUTBOX, job_id)


async def has_job(store: Store, job_id: str) -> bool:
    """Whether job `job_id` is still in the outbox."""
    return await store.get(_job_key(job_id)) is not None


async def record_attempt(store: Store, batch: Batch, attempt: Attempting) -> bool:
    """Write the courier's intent onto the job (by the job's owner, into its batch);
    False when the job is gone. The first attempt's time is kept: a provider lookup
    from it covers every later attempt."""
    raw = await store.get(_job_key(attempt.job))
    if raw is None:
        return False
    job = _decode_job(raw)
    if isinstance(job, SmsJob) and job.attempt_at is None:
        job.attempt_at = attempt.at
        batch.put(_job_key(attempt.job), msgspec.json.encode(job))
    return True


def _job_owner(job: Job) -> Address | None:
    """The actor that records `job`'s outcome (None: an e-mail queued before jobs named
    their ticket)."""
    if isinstance(job, SmsJob):
        return message_owner(job.ticket, job.profile)
    return ("ticket", job.ticket) if job.ticket is not None else None


def refusal(blocked: bool, subscribed: bool, needs_consent: bool) -> str | None:
    """The `error_code` an SMS is refused with at hand-off, or None (R04, R15)."""
    if blocked:
        return "blocked"
    if needs_consent and not subscribed:
        return "not_subscribed"
    return None


class Courier:
    """Works the outbox with `workers` concurrent senders. Jobs are handed to the workers
    through a queue kept at most `2 × workers` long: the outbox is read when the queue
    runs short, a page at a time from the oldest job, so a backlog of queued SMS costs a
    page read per few jobs, not a read of the whole backlog per job."""

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
        # jobs whose owner runs on another node (several nodes on one store): its courier
        # sends them; looked at again when shards move (`moved`)
        self._elsewhere: set[str] = set()
        # outcomes whose recording by the job's owner failed: the recording is retried,
        # the job is never sent again
        self._outcomes: dict[str, tuple[Address, Sent | Mailed]] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.sent = 0
        self.failed = 0

    # -- adding jobs (inside an actor's batch) ---------------------------------------------

    def _add(self, batch: Batch, job_id: str, job: Job) -> None:
        batch.put(_job_key(job_id), msgspec.json.encode(job))
        batch.index(OUTBOX, job_id, self._clock.now(), frozenset())

    def add_sms(self, batch: Batch, message: Message, phone: str, *, held: bool = False) -> None:
        """Queue the SMS `message` to `phone`; its job id is the message id. `held`: it
        was held or scheduled, so consent and blocking are checked again at hand-off."""
        job = SmsJob(
            message.id,
            message.profile,
            phone,
            self._account.sms_sender,
            message.body,
            list(message.media),
            message.ticket,
            needs_consent=message.kind not in _WITHOUT_CONSENT,
            held=held,
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

    def moved(self) -> None:
        """Shards moved between nodes: look at every job again (a dead node's jobs may be
        this node's now)."""
        self._elsewhere.clear()
        self._wake.set()

    # -- the service ------------------------------------------------------------------------

    async def run(
        self,
        ctx: ActorContext[Any],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send what is in the outbox of `ctx`'s engine, and whatever is added later,
        until cancelled."""
        send, receive = trio.open_memory_channel[str](math.inf)
        self._in_flight.clear()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self._workers):
                nursery.start_soon(self._worker, ctx, receive)
            task_status.started()
            while True:
                self._wake = trio.Event()
                await self._hand_out(ctx.store, send)
                with trio.move_on_after(self._retry_after):
                    await self._wake.wait()

    async def _hand_out(self, store: Store, send: trio.MemorySendChannel[str]) -> None:
        """Queue the oldest jobs that are not in hand (being sent, waiting for a retry
        round, or another node's) until the workers have `2 × workers` waiting; read the
        outbox only when some are wanted, a `PAGE` at a time."""
        wanted = 2 * self._workers - send.statistics().current_buffer_used
        after: tuple[float, str] | None = None
        while wanted > 0:
            rows = await store.index_query(OUTBOX, frozenset(), PAGE, descending=False, after=after)
            for job_id, _ in rows:
                if job_id not in self._in_flight and job_id not in self._elsewhere:
                    self._in_flight.add(job_id)
                    send.send_nowait(job_id)
                    wanted -= 1
                    if not wanted:
                        return
            if len(rows) < PAGE:
                return
            job_id, score = rows[-1]
            after = (score, job_id)

    async def _worker(
        self, ctx: ActorContext[Any], receive: trio.MemoryReceiveChannel[str]
    ) -> None:
        async for job_id in receive:
            done = await self._deliver(ctx, job_id)
            if done:
                self._in_flight.discard(job_id)
            else:
                self._release_later(job_id)
            if receive.statistics().current_buffer_used < self._workers:
                self._wake.set()  # running short: look for more

    def _release_later(self, job_id: str) -> None:
        """Leave a job that failed for now alone until the next retry round."""

        async def release() -> None:
            await trio.sleep(self._retry_after)
            self._in_flight.discard(job_id)

        if self._nursery is not None:
            self._nursery.start_soon(release)

    async def _deliver(self, ctx: ActorContext[Any], job_id: str) -> bool:
        """Send one job and have its owner record the outcome; True when it is finished
        (sent, or failed for good), False to try again later. An outcome whose recording
        failed is kept and only its recording is tried again."""
        pending = self._outcomes.get(job_id)
        try:
            if pending is None:
                raw = await ctx.store.get(_job_key(job_id))
                if raw is None:
                    return True
                job = _decode_job(raw)
                owner = _job_owner(job)
                if owner is not None and not ctx.owns(owner):
                    self._elsewhere.add(job_id)
                    return True
                if isinstance(job, SmsJob):
                    sent = await self._hand_off(ctx, job_id, job)
                    if sent is None:
                        return False
                    pending = (message_owner(job.ticket, job.profile), sent)
                else:
                    if not await self._mail(job_id, job):
                        return False
                    if job.ticket is None:  # queued before jobs named their owner
                        batch = Batch()
                        remove_job(batch, job_id)
                        await ctx.commit(batch)
                        return True
                    pending = (("ticket", job.ticket), Mailed(job_id))
                self._outcomes[job_id] = pending
            await ctx.ask(*pending)
        except _ASK_FAILED as exc:
            log.warning("job %s: its owner did not answer, trying later: %r", job_id, exc)
            return False
        except DeliveryError as exc:  # the provider could not tell whether it has the SMS
            log.warning("SMS %s in doubt, not looked up yet: %s", job_id, exc)
            return False
        del self._outcomes[job_id]
        return True

    async def _mail(self, job_id: str, job: EmailJob) -> bool:
        """Send an e-mail job; True when done with (sent, or failed for good)."""
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
        return True

    @staticmethod
    async def _taken(ctx: ActorContext[Any], message_id: str, provider_id: str) -> bool:
        """Whether `provider_id` is recorded for a message other than `message_id`."""
        known = await ctx.store.get(f"provider:{provider_id}")
        return known is not None and known.decode() != message_id

    async def _hand_off(self, ctx: ActorContext[Any], job_id: str, job: SmsJob) -> Sent | None:
        """The provider's outcome for `job`: found at the provider when in doubt, refused
        at hand-off, or sent now (after recording the intent). None: try again later."""
        owner = message_owner(job.ticket, job.profile)
        outbound = OutboundSms(job.message, job.to, job.sender, job.body, tuple(job.media))
        if job.attempt_at is not None:  # a provider call began and its outcome is unknown
            found = await self.sms.find(
                outbound, job.attempt_at, taken=partial(self._taken, ctx, job.message)
            )
            if found is not None:
                log.info("SMS %s was taken by the provider already: %s", job.message, found)
                return self._sent(job_id, job, found)
        if job.held or job.attempt_at is not None:
            reason = await ctx.ask(("profile", job.profile), MayText(job.needs_consent))
            if reason is not None:
                log.info("SMS %s not sent at hand-off: %s", job.message, reason)
                return Sent(job.message, job_id, None, "failed", reason)
        if job.attempt_at is None and not await ctx.ask(
            owner, Attempting(job_id, self._clock.now())
        ):
            return None  # gone: nothing left to send
        try:
            receipt = await self.sms.send(outbound)
        except DeliveryError as exc:
            if not exc.permanent:
                log.warning("SMS %s not sent yet: %s", job.message, exc)
                return None
            log.error("SMS %s failed: %s", job.message, exc)
            self.failed += 1
            return Sent(job.message, job_id, None, "failed", exc.error_code)
        self.sent += 1
        return self._sent(job_id, job, receipt)

    @staticmethod
    def _sent(job_id: str, job: SmsJob, receipt: SmsReceipt) -> Sent:
        status = _PROVIDER_STATUS.get(receipt.status, "queued")
        return Sent(job.message, job_id, receipt.provider_id, status)
