"""Snooze wake-up times (R13): when a snoozed ticket returns to open, for the presets
`later_today`, `tomorrow`, `next_week` or an exact time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

from tidings.actors.model import require_aware
from tidings.actors.quiet_hours import local_to_utc, require_zone

SnoozePreset = Literal["later_today", "tomorrow", "next_week"]

PRESETS: tuple[SnoozePreset, ...] = ("later_today", "tomorrow", "next_week")
"""The snooze choices an agent can pick besides an exact time."""

LATER_TODAY = timedelta(hours=3)
"""How long `later_today` snoozes for."""

WAKE_MINUTES = 9 * 60
"""`tomorrow` and `next_week` wake at 09:00 brand time."""


def _parse_until(choice: str) -> datetime:
    """An exact wake-up time given as ISO 8601 with an offset."""
    try:
        when = datetime.fromisoformat(choice)
    except ValueError:
        raise ValueError(
            f"until: {choice!r} is not later_today, tomorrow, next_week or an ISO 8601 time"
        ) from None
    return require_aware(when, "until")


def wake_time(
    choice: str | datetime | None,
    brand_zone: str | tzinfo,
    now_utc: datetime,
) -> datetime:
    """When a ticket snoozed at `now_utc` wakes, as an aware UTC datetime.

    `later_today` is three hours on; `tomorrow` is 09:00 brand time on the next calendar
    day; `next_week` is 09:00 brand time on the next Monday (a week on when today is a
    Monday). Any other choice is an exact time (an aware datetime or ISO 8601 text with
    an offset) that must be in the future. Otherwise ValueError("until: …").
    """
    now = require_aware(now_utc, "now")
    if choice == "later_today":
        return now + LATER_TODAY
    if choice in ("tomorrow", "next_week"):
        zone = require_zone(brand_zone, "account.timezone")
        today = now.astimezone(zone).date()
        days = 1 if choice == "tomorrow" else 7 - today.weekday()
        return local_to_utc(today + timedelta(days=days), WAKE_MINUTES, zone)
    if isinstance(choice, datetime):
        when = require_aware(choice, "until")
    elif isinstance(choice, str):
        when = _parse_until(choice)
    else:
        raise ValueError("until: must be later_today, tomorrow, next_week or a time")
    if when <= now:
        raise ValueError("until: must be in the future")
    return when.astimezone(UTC)
