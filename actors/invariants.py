"""The inbox's crash invariants, as pure checks over what a store holds.

Each check reads the store through the `Store` protocol only (keys, indexes, durable
timers, the event log) and answers `Violation`s naming the keys involved; nothing is
written. `check(store)` runs them all (`tidings check` prints them); `open_inbox`
repairs, on start, the ones no single actor can keep atomic (see the README, "Crash
consistency"):

| kind | the invariant | kept by |
|---|---|---|
| `badge` | the `badge` index = the profiles with an open unread ticket | reconciled on start |
| `profile_tickets` | a profile's own list of its open, snoozed and unread tickets is right | reconciled on start |
| `blocked_open` | no open or snoozed ticket on a blocked profile | reconciled on start |
| `sms_tickets` | a profile has at most one open or snoozed SMS ticket | atomic (the profile's `sms_ticket`) |
| `session_tickets` | a web chat session has at most one open or snoozed ticket | reconciled on start |
| `outbox_orphan` | every outbox job refers to a stored message (SMS) or ticket (e-mail) | atomic (the owner's batch) |
| `timer_orphan` | every durable timer has a live purpose | reconciled on start |
| `snooze_lost` | every snoozed ticket has its wake-up timer at its due time | atomic (the ticket's batch) |
| `followup_lost` | every scheduled follow-up has its timer at its due time | atomic (the ticket's batch) |
| `event_gap` | the event log is gap-free: sequence numbers oldest..last (retention drops the ones before `oldest`) | atomic (the store) |
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tidings.actors.courier import OUTBOX
from tidings.actors.model import StoredMessage
from tidings.actors.profile import BADGE, ProfileState
from tidings.actors.ticket import TICKETS, TicketRecord
from tidings.engine import Store
from tidings.engine.store import DueTimer

PAGE = 1_000
TIMERS_READ = 10_000_000  # durable timers read at most (`due_timers` has no paging)
LIVE = ("open", "snoozed")

KINDS = (
    "badge",
    "profile_tickets",
    "blocked_open",
    "sms_tickets",
    "session_tickets",
    "outbox_orphan",
    "timer_orphan",
    "snooze_lost",
    "followup_lost",
    "event_gap",
)

_ticket = msgspec.json.Decoder(TicketRecord).decode
_profile = msgspec.json.Decoder(ProfileState).decode
_message = msgspec.json.Decoder(StoredMessage).decode
_envelope = msgspec.msgpack.Decoder(tuple[str, str, str, msgspec.Raw]).decode


class Violation(msgspec.Struct, frozen=True):
    """One broken invariant: its `kind` (one of `KINDS`), the keys involved, and what is
    wrong in words."""

    kind: str
    keys: tuple[str, ...]
    detail: str

    def line(self) -> str:
        """One line for an operator: ``kind: detail [key key …]``."""
        return f"{self.kind}: {self.detail} [{' '.join(self.keys)}]"


@dataclass
class Snapshot:
    """What the checks look at, read once: the open and snoozed tickets, the profiles
    they (and the badge) name, the badge index, the outbox and the durable timers."""

    tickets: dict[str, TicketRecord] = field(default_factory=dict)
    profiles: dict[str, ProfileState] = field(default_factory=dict)
    badge: set[str] = field(default_factory=set)
    outbox: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    timers: dict[str, DueTimer] = field(default_factory=dict)
    messages: set[str] = field(default_factory=set)  # msg ids that are stored
    stored_tickets: set[str] = field(default_factory=set)  # ids with a `ticket:` record
    held: set[str] = field(default_factory=set)  # stored SMS still `queued`


async def members(store: Store, index: str, tags: frozenset[str] = frozenset()) -> list[str]:
    """Every member of `index` with all `tags`, a page at a time."""
    found: list[str] = []
    after: tuple[float, str] | None = None
    while True:
        rows = await store.index_query(index, tags, PAGE, descending=False, after=after)
        found.extend(member for member, _ in rows)
        if len(rows) < PAGE:
            return found
        after = (rows[-1][1], rows[-1][0])


async def _records(store: Store, prefix: str, ids: list[str]) -> dict[str, bytes]:
    """The stored values of `{prefix}{id}` for `ids`, by id (missing ones left out)."""
    found: dict[str, bytes] = {}
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        values = await store.get_many([f"{prefix}{i}" for i in page])
        found.update((i, raw) for i, raw in zip(page, values, strict=True) if raw is not None)
    return found


async def snapshot(store: Store) -> Snapshot:
    """Read what the checks need from `store`."""
    snap = Snapshot()
    ids = [t for s in LIVE for t in await members(store, TICKETS, frozenset({f"state={s}"}))]
    snap.tickets = {t: _ticket(raw) for t, raw in (await _records(store, "ticket:", ids)).items()}
    snap.badge = set(await members(store, BADGE))
    wanted = sorted({r.ticket.profile for r in snap.tickets.values()} | snap.badge)
    profiles = await _records(store, "profile:", wanted)
    snap.profiles = {p: _profile(raw) for p, raw in profiles.items()}
    jobs = await members(store, OUTBOX)
    stored_jobs = await _records(store, "outbox:", jobs)
    snap.outbox = {j: _job(stored_jobs.get(j)) for j in jobs}
    for timer in await store.due_timers(math.inf, TIMERS_READ):
        snap.timers[timer.key] = timer
    # what outbox jobs and timers point at, and the tickets the badge's profiles list
    message_ids = {str(j["message"]) for j in snap.outbox.values() if j and "message" in j}
    message_ids |= {k.removeprefix("send:") for k in snap.timers if k.startswith("send:")}
    for message_id, raw in (await _records(store, "msg:", sorted(message_ids))).items():
        snap.messages.add(message_id)
        if _message(raw).message.status == "queued":
            snap.held.add(message_id)
    named = {str(j["ticket"]) for j in snap.outbox.values() if j and j.get("ticket")}
    named |= {t for p in snap.profiles.values() for t in (*p.unread, *p.tickets)}
    named |= {k.split(":", 1)[1] for k in snap.timers if k.startswith(("snooze:", "followup:"))}
    others = await _records(store, "ticket:", sorted(named - set(snap.tickets)))
    snap.tickets.update((t, _ticket(raw)) for t, raw in others.items())
    snap.stored_tickets = set(snap.tickets)
    return snap


def _job(raw: bytes | None) -> dict[str, Any] | None:
    """An outbox job as plain data (read loosely: the courier's job shapes may grow)."""
    if raw is None:
        return None
    try:
        job = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return job if isinstance(job, dict) else None


def _live(snap: Snapshot) -> dict[str, TicketRecord]:
    return {t: r for t, r in snap.tickets.items() if r.ticket.state in LIVE}


# -- the checks (pure) ------------------------------------------------------------------


def badge(snap: Snapshot) -> list[Violation]:
    """The badge index lists exactly the profiles with an open unread ticket."""
    unread: dict[str, list[str]] = defaultdict(list)
    for ticket_id, record in _live(snap).items():
        if record.ticket.state == "open" and record.ticket.unread:
            unread[record.ticket.profile].append(ticket_id)
    found = [
        Violation("badge", (f"profile:{p}", *(f"ticket:{t}" for t in sorted(ts))),
                  "has an open unread ticket but is not in the badge index")
        for p, ts in sorted(unread.items()) if p not in snap.badge
    ]  # fmt: skip
    found += [
        Violation("badge", (f"profile:{p}",), "is in the badge index without an open unread ticket")
        for p in sorted(snap.badge - set(unread))
    ]
    return found


def profile_tickets(snap: Snapshot) -> list[Violation]:
    """Each profile lists its open and snoozed tickets with their state, and its open
    unread ones as unread (what blocking closes and the badge counts), as they are."""
    found = []
    for profile_id, state in sorted(snap.profiles.items()):
        mine = {t for t, r in _live(snap).items() if r.ticket.profile == profile_id}
        for ticket_id in sorted(mine | set(state.tickets) | set(state.unread)):
            record = snap.tickets.get(ticket_id)
            ticket = record.ticket if record is not None else None
            actual = ticket.state if ticket is not None else "closed"
            listed = state.tickets.get(ticket_id, "closed")
            unread = ticket is not None and ticket.state == "open" and ticket.unread
            if listed != actual or (ticket_id in state.unread) != unread:
                found.append(Violation(
                    "profile_tickets", (f"profile:{profile_id}", f"ticket:{ticket_id}"),
                    f"the profile lists the ticket as {listed}"
                    f"{', unread' if ticket_id in state.unread else ''}; it is {actual}"
                    f"{', unread' if unread else ''}",
                ))  # fmt: skip
    return found


def blocked_open(snap: Snapshot) -> list[Violation]:
    """No open or snoozed ticket belongs to a blocked profile."""
    found = []
    for ticket_id, record in sorted(_live(snap).items()):
        profile = snap.profiles.get(record.ticket.profile)
        if profile is not None and profile.profile.blocked:
            found.append(Violation(
                "blocked_open", (f"profile:{record.ticket.profile}", f"ticket:{ticket_id}"),
                f"the profile is blocked but its ticket is {record.ticket.state}",
            ))  # fmt: skip
    return found


def _at_most_one(
    snap: Snapshot,
    kind: str,
    channel: str,
    what: str,
    owner_of: Callable[[TicketRecord], str | None],
) -> list[Violation]:
    groups: dict[str, list[str]] = defaultdict(list)
    for ticket_id, record in _live(snap).items():
        owner = owner_of(record)
        if record.ticket.channel == channel and owner:
            groups[owner].append(ticket_id)
    return [
        Violation(kind, (f"{what}:{owner}", *(f"ticket:{t}" for t in sorted(ts))),
                  f"has {len(ts)} open or snoozed {channel} tickets")
        for owner, ts in sorted(groups.items()) if len(ts) > 1
    ]  # fmt: skip


def sms_tickets(snap: Snapshot) -> list[Violation]:
    """A profile has at most one open or snoozed SMS ticket."""
    return _at_most_one(snap, "sms_tickets", "sms", "profile", lambda r: r.ticket.profile)


def session_tickets(snap: Snapshot) -> list[Violation]:
    """A web chat session has at most one open or snoozed ticket."""
    return _at_most_one(snap, "session_tickets", "webchat", "session", lambda r: r.session)


def outbox_orphan(snap: Snapshot) -> list[Violation]:
    """Every outbox job is readable and refers to a stored message (SMS) or ticket (e-mail)."""
    found = []
    for job_id, job in sorted(snap.outbox.items()):
        key = f"outbox:{job_id}"
        if job is None:
            found.append(Violation("outbox_orphan", (key,), "the job is missing or unreadable"))
        elif job.get("type") == "sms" and str(job.get("message")) not in snap.messages:
            found.append(Violation(
                "outbox_orphan", (key, f"msg:{job.get('message')}"), "its message is not stored"
            ))  # fmt: skip
        elif (
            job.get("type") == "email"
            and job.get("ticket")
            and (str(job["ticket"]) not in snap.stored_tickets)
        ):
            found.append(Violation(
                "outbox_orphan", (key, f"ticket:{job['ticket']}"), "its ticket is not stored"
            ))  # fmt: skip
    return found


def timer_purpose(snap: Snapshot, timer: DueTimer) -> str | None:
    """Why durable timer `timer` has no live purpose, or None when it has one: a snooze
    wakes a ticket snoozed until then, a follow-up belongs to a follow-up scheduled then, a
    send to a held (still queued) message."""
    kind, _, target = timer.key.partition(":")
    if kind == "send":
        return None if target in snap.held else "no held message"
    record = snap.tickets.get(target)
    if kind == "snooze":
        if record is None or record.ticket.state != "snoozed":
            return "its ticket is not snoozed"
        return (
            None if record.snooze_due == timer.due else "the ticket is snoozed until another time"
        )
    if kind == "followup":
        followup = record.ticket.followup if record is not None else None
        if followup is None or followup.status != "scheduled":
            return "its ticket has no scheduled follow-up"
        return (
            None
            if record and record.followup_due == timer.due
            else "the follow-up is due at another time"
        )
    return f"no purpose is known for {kind!r} timers"


def timer_orphan(snap: Snapshot) -> list[Violation]:
    """Every stored durable timer has a live purpose (see `timer_purpose`)."""
    found = []
    for key, timer in sorted(snap.timers.items()):
        why = timer_purpose(snap, timer)
        if why is not None:
            target = key.partition(":")[2]
            other = f"msg:{target}" if key.startswith("send:") else f"ticket:{target}"
            found.append(Violation("timer_orphan", (f"timer:{key}", other), why))
    return found


def lost_timers(snap: Snapshot) -> list[Violation]:
    """Every snoozed ticket and every scheduled follow-up has its timer, due then."""
    found = []
    for ticket_id, record in sorted(_live(snap).items()):
        ticket = record.ticket
        scheduled = ticket.followup is not None and ticket.followup.status == "scheduled"
        wanted = (
            ("snooze_lost", "snooze", ticket.state == "snoozed", record.snooze_due,
             "the ticket is snoozed but no timer wakes it then"),
            ("followup_lost", "followup", scheduled, record.followup_due,
             "a follow-up is scheduled but no timer sends it then"),
        )  # fmt: skip
        for kind, prefix, needed, due, detail in wanted:
            timer = snap.timers.get(f"{prefix}:{ticket_id}")
            if needed and (timer is None or timer.due != due):
                keys = (f"ticket:{ticket_id}", f"timer:{prefix}:{ticket_id}")
                found.append(Violation(kind, keys, detail))
    return found


CHECKS = (
    badge,
    profile_tickets,
    blocked_open,
    sms_tickets,
    session_tickets,
    outbox_orphan,
    timer_orphan,
    lost_timers,
)


def stale_presence(snap: Snapshot) -> list[str]:
    """Open and snoozed web chat tickets that say their visitor is online: after a
    restart nobody knows that any more (presence lives in memory)."""
    return sorted(
        t for t, r in _live(snap).items()
        if r.ticket.channel == "webchat" and r.ticket.visitor_online
    )  # fmt: skip


async def event_gaps(store: Store) -> list[Violation]:
    """The event log holds every sequence number from the oldest kept to the last, once,
    in order (retention drops whole prefixes, so a hole above the oldest is a gap)."""
    last = await store.last_event_seq()
    expected = await store.first_event_seq()
    found: list[Violation] = []
    while expected <= last:
        page = await store.events_since(expected - 1, 10 * PAGE)
        if not page:
            break
        for seq, _ in page:
            if seq != expected:
                found.append(Violation(
                    "event_gap", (f"event:{expected}", f"event:{seq}"),
                    f"sequence numbers {expected}..{seq - 1} are missing" if seq > expected
                    else f"sequence number {seq} repeats or goes back",
                ))  # fmt: skip
            expected = max(expected, seq) + 1
    if expected <= last:
        found.append(Violation(
            "event_gap", (f"event:{expected}", f"event:{last}"),
            f"the log ends at {expected - 1} but its last sequence number is {last}",
        ))  # fmt: skip
    return found


async def check(store: Store) -> list[Violation]:
    """Every invariant violation in `store` (empty when it is consistent)."""
    snap = await snapshot(store)
    found = [v for each in CHECKS for v in each(snap)]
    return found + await event_gaps(store)


__all__ = [
    "CHECKS",
    "KINDS",
    "Snapshot",
    "Violation",
    "badge",
    "blocked_open",
    "check",
    "event_gaps",
    "lost_timers",
    "members",
    "outbox_orphan",
    "profile_tickets",
    "session_tickets",
    "snapshot",
    "sms_tickets",
    "stale_presence",
    "timer_orphan",
    "timer_purpose",
]
