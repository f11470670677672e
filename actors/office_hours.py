"""Web chat welcome message and office hours (R23): whether the brand is inside its
office hours, and which automatic message greets a visitor who starts a chat."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Literal

from tidings.actors.model import require_aware
from tidings.actors.quiet_hours import parse_clock, require_zone

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names of the office-hours table, Monday first (as `datetime.weekday()`)."""

GreetingKind = Literal["welcome", "office_hours"]


def validate_days(days: object, field: str = "webchat.office_hours.days") -> None:
    """Refuse an office-hours table that is not `{weekday: [["HH:MM", "HH:MM"], …]}`:
    unknown weekday names, bad times, a range whose start is not before its end.
    ValueError naming the field (e.g. `webchat.office_hours.days.mon[0]`).

    A missing weekday is closed all day; an end of "24:00" means until midnight.
    """
    if not isinstance(days, Mapping):
        raise ValueError(f"{field}: must be a table of weekdays")
    for day, ranges in days.items():
        if day not in WEEKDAYS:
            raise ValueError(f"{field}.{day}: not a weekday (use {', '.join(WEEKDAYS)})")
        if not isinstance(ranges, list | tuple):
            raise ValueError(f"{field}.{day}: must be a list of [start, end] ranges")
        for index, hours in enumerate(ranges):
            where = f"{field}.{day}[{index}]"
            if not isinstance(hours, list | tuple) or len(hours) != 2:
                raise ValueError(f'{where}: must be ["HH:MM", "HH:MM"]')
            start = parse_clock(hours[0], f"{where}.start")
            end = parse_clock(hours[1], f"{where}.end", allow_end_of_day=True)
            if start >= end:
                raise ValueError(f"{where}: start {hours[0]} must be before end {hours[1]}")


def validate(office_hours: Mapping[str, object], field: str = "webchat.office_hours") -> None:
    """Refuse an office-hours setting with a wrong type or a bad days table;
    ValueError naming the field."""
    if not isinstance(office_hours.get("enabled", False), bool):
        raise ValueError(f"{field}.enabled: must be true or false")
    for key in ("inside_message", "outside_message"):
        if not isinstance(office_hours.get(key, ""), str):
            raise ValueError(f"{field}.{key}: must be a string")
    validate_days(office_hours.get("days", {}), f"{field}.days")


def is_inside(days: Mapping[str, object], zone: str | tzinfo, when_utc: datetime) -> bool:
    """Whether the instant falls inside the office hours of its weekday in the brand's zone
    (each range from start inclusive to end exclusive)."""
    validate_days(days)
    local = require_aware(when_utc, "when").astimezone(require_zone(zone, "account.timezone"))
    ranges = days.get(WEEKDAYS[local.weekday()]) or []
    assert isinstance(ranges, list | tuple)  # checked by validate_days
    seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    for hours in ranges:
        start = parse_clock(hours[0], "start")
        end = parse_clock(hours[1], "end", allow_end_of_day=True)
        if start * 60 <= seconds < end * 60:
            return True
    return False


def welcome_for(
    webchat_settings: Mapping[str, object], zone: str | tzinfo, when_utc: datetime
) -> tuple[GreetingKind, str] | None:
    """The automatic message for a visitor starting a chat, as `(kind, text)`, or None.

    With office hours enabled, the inside or outside message (kind `office_hours`)
    replaces the welcome message; otherwise the welcome message (kind `welcome`). A text
    that is empty or only whitespace means no message.
    """
    office_hours = webchat_settings.get("office_hours") or {}
    if not isinstance(office_hours, Mapping):
        raise ValueError("webchat.office_hours: must be a table")
    if office_hours.get("enabled", False):
        days = office_hours.get("days") or {}
        if not isinstance(days, Mapping):
            raise ValueError("webchat.office_hours.days: must be a table of weekdays")
        key = "inside_message" if is_inside(days, zone, when_utc) else "outside_message"
        kind: GreetingKind = "office_hours"
        text = office_hours.get(key, "")
    else:
        kind = "welcome"
        text = webchat_settings.get("welcome_message", "")
    if not isinstance(text, str) or not text.strip():
        return None
    return kind, text
