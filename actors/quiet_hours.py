"""Quiet hours for SMS (R27): whether a send to a profile falls outside the allowed
local hours, and when the next allowed time is. Also the wall-clock helpers the other
time rules share (clock values "HH:MM", zones by name, local time to UTC, and
`require_aware` from the model, which bounds every time to years the server computes with)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.actors.model import require_aware

DEFAULT_START = "08:00"
DEFAULT_END = "20:00"

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


@dataclass(slots=True, frozen=True)
class QuietHours:
    """A send that must be held: the profile's local time ("HH:MM") and its zone name."""

    local_time: str
    timezone: str


def parse_clock(value: object, field: str, *, allow_end_of_day: bool = False) -> int:
    """Minutes after midnight of a clock value "HH:MM" (00:00–23:59, and "24:00" when
    `allow_end_of_day`); ValueError naming `field` when it is not one."""
    if not isinstance(value, str):
        raise ValueError(f'{field}: must be a time "HH:MM"')
    match = _CLOCK.fullmatch(value)
    if match is None:
        raise ValueError(f'{field}: must be a time "HH:MM", not {value!r}')
    hours, minutes = int(match[1]), int(match[2])
    if allow_end_of_day and hours == 24 and minutes == 0:
        return 24 * 60
    if hours > 23 or minutes > 59:
        raise ValueError(f"{field}: {value!r} is not a time of day")
    return hours * 60 + minutes


def zone_named(name: str | None) -> ZoneInfo | None:
    """The IANA time zone of that name, or None when there is no name or no such zone."""
    if not name or not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def require_zone(zone: str | tzinfo, field: str) -> tzinfo:
    """The zone itself, or the IANA zone of that name; ValueError naming `field` if unknown."""
    if isinstance(zone, tzinfo):
        return zone
    found = zone_named(zone)
    if found is None:
        raise ValueError(f"{field}: unknown time zone {zone!r}")
    return found


def local_to_utc(day: date, minutes: int, zone: tzinfo) -> datetime:
    """The first instant (in UTC) at which the wall clock in `zone` shows `minutes` after
    midnight of `day`.

    For a time that happens twice (clocks going back) that is the first occurrence; for
    a time that never happens (clocks going forward over it) it is the moment the clock
    jumps past it.
    """
    wall = datetime.combine(day, time()) + timedelta(minutes=minutes)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        # Exists; fold=0 is the first of two occurrences when the clock goes back.
        return first
    # In a gap: find the transition between the two readings by bisection (to the second).
    low, high = min(first, other), max(first, other)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0) if high.microsecond else high


def validate(quiet_hours: Mapping[str, object], field: str = "quiet_hours") -> None:
    """Refuse a quiet-hours setting without valid `start` and `end` ("HH:MM");
    ValueError naming the field."""
    parse_clock(quiet_hours.get("start", DEFAULT_START), f"{field}.start")
    parse_clock(quiet_hours.get("end", DEFAULT_END), f"{field}.end", allow_end_of_day=True)


def _window(quiet_hours: Mapping[str, object]) -> tuple[int, int]:
    start = parse_clock(quiet_hours.get("start", DEFAULT_START), "quiet_hours.start")
    end = parse_clock(quiet_hours.get("end", DEFAULT_END), "quiet_hours.end", allow_end_of_day=True)
    return start, end


def _allowed(local: datetime, start: int, end: int) -> bool:
    """Whether the wall-clock time is inside [start, end) (a window may cross midnight)."""
    seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    start_s, end_s = start * 60, end * 60
    if start == end:
        return True
    if start < end:
        return start_s <= seconds < end_s
    return seconds >= start_s or seconds < end_s


def check(
    zone: str | None, quiet_hours: Mapping[str, object], now_utc: datetime
) -> QuietHours | None:
    """Whether an SMS to a profile in `zone` must be held now, and why.

    Sending is allowed from `start` inclusive to `end` exclusive of the profile's local
    time (a window may cross midnight; `start == end` means no quiet hours). A profile
    with no zone or an unknown one is never held.
    """
    found = zone_named(zone)
    if found is None or zone is None:
        return None
    start, end = _window(quiet_hours)
    local = require_aware(now_utc, "now").astimezone(found)
    if _allowed(local, start, end):
        return None
    return QuietHours(local_time=local.strftime("%H:%M"), timezone=zone)


def next_allowed(
    zone: str | None, quiet_hours: Mapping[str, object], now_utc: datetime
) -> datetime:
    """When an SMS to a profile in `zone` may next be sent, in UTC: `now_utc` itself when
    it is not held, else the next `start` of the profile's local day (today's if still
    ahead, else tomorrow's), correct across daylight-saving changes."""
    now = require_aware(now_utc, "now")
    found = zone_named(zone)
    if found is None:
        return now
    start, end = _window(quiet_hours)
    local = now.astimezone(found)
    if _allowed(local, start, end):
        return now
    minutes_now = local.hour * 60 + local.minute
    day = local.date() if minutes_now < start else local.date() + timedelta(days=1)
    while True:
        at = local_to_utc(day, start, found)
        # A window that lies wholly inside a daylight-saving gap never opens that day.
        if _allowed(at.astimezone(found), start, end):
            return at
        day += timedelta(days=1)
