"""R23: web chat welcome message and office hours."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.office_hours import WEEKDAYS, is_inside, validate, validate_days, welcome_for

NY = "America/New_York"
WEEK = {
    "mon": [["09:00", "17:00"]],
    "tue": [["09:00", "17:00"]],
    "sat": [["10:00", "12:00"], ["13:00", "15:00"]],
}


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def webchat(
    *,
    enabled: bool,
    welcome: str = "Hi! How can we help?",
    inside: str = "We're here.",
    outside: str = "We're away; we'll answer tomorrow.",
    days: object = None,
) -> dict[str, object]:
    return {
        "followup_email": True,
        "welcome_message": welcome,
        "office_hours": {
            "enabled": enabled,
            "days": WEEK if days is None else days,
            "inside_message": inside,
            "outside_message": outside,
        },
    }


# Monday 3 June 2024; New York is on EDT (UTC-4).
@pytest.mark.parametrize(
    ("when", "inside"),
    [
        (utc(2024, 6, 3, 12, 59), False),  # 08:59
        (utc(2024, 6, 3, 13, 0), True),  # 09:00: start inclusive
        (utc(2024, 6, 3, 20, 59, 59), True),  # 16:59:59
        (utc(2024, 6, 3, 21, 0), False),  # 17:00: end exclusive
        (utc(2024, 6, 5, 15, 0), False),  # Wednesday: not in the table, closed
        (utc(2024, 6, 8, 14, 30), True),  # Saturday 10:30
        (utc(2024, 6, 8, 16, 30), False),  # Saturday 12:30, lunch break
        (utc(2024, 6, 8, 17, 0), True),  # Saturday 13:00
        (utc(2024, 6, 8, 19, 0), False),  # Saturday 15:00
    ],
)
def test_r23_inside_office_hours_by_weekday_ranges(when: datetime, inside: bool) -> None:
    assert is_inside(WEEK, NY, when) is inside


def test_r23_weekday_is_the_brands_not_utcs() -> None:
    late = {"mon": [["20:00", "24:00"]]}
    # Tuesday 02:00 UTC is still Monday 22:00 in New York.
    assert is_inside(late, NY, utc(2024, 6, 4, 2, 0)) is True
    assert is_inside(late, "UTC", utc(2024, 6, 4, 2, 0)) is False
    # Tuesday 04:00 UTC is Tuesday 00:00 in New York: closed.
    assert is_inside(late, NY, utc(2024, 6, 4, 4, 0)) is False


def test_r23_office_hours_follow_daylight_saving_in_the_brand_zone() -> None:
    rome = "Europe/Rome"
    sundays = {"sun": [["09:00", "10:00"]]}
    # Sun 24 March 2024 (CET, UTC+1) and Sun 31 March 2024 (CEST, UTC+2).
    assert is_inside(sundays, rome, utc(2024, 3, 24, 8, 0)) is True
    assert is_inside(sundays, rome, utc(2024, 3, 24, 7, 0)) is False
    assert is_inside(sundays, rome, utc(2024, 3, 31, 7, 0)) is True
    assert is_inside(sundays, rome, utc(2024, 3, 31, 8, 0)) is False


def test_r23_zone_may_be_a_tzinfo() -> None:
    assert is_inside(WEEK, ZoneInfo(NY), utc(2024, 6, 3, 13, 0)) is True


def test_r23_empty_table_is_always_outside() -> None:
    assert is_inside({}, NY, utc(2024, 6, 3, 15, 0)) is False
    assert is_inside({"mon": []}, NY, utc(2024, 6, 3, 15, 0)) is False


def test_r23_unknown_brand_zone_is_an_error_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="account.timezone"):
        is_inside(WEEK, "Mars/Olympus_Mons", utc(2024, 6, 3, 15, 0))


def test_r23_welcome_message_when_office_hours_are_off() -> None:
    assert welcome_for(webchat(enabled=False), NY, utc(2024, 6, 3, 15, 0)) == (
        "welcome",
        "Hi! How can we help?",
    )
    # Off means the welcome message even outside the hours in the table.
    assert welcome_for(webchat(enabled=False), NY, utc(2024, 6, 5, 3, 0)) == (
        "welcome",
        "Hi! How can we help?",
    )


def test_r23_no_welcome_message_means_none() -> None:
    assert welcome_for(webchat(enabled=False, welcome=""), NY, utc(2024, 6, 3, 15, 0)) is None
    assert welcome_for(webchat(enabled=False, welcome="  \n"), NY, utc(2024, 6, 3, 15, 0)) is None
    assert welcome_for({}, NY, utc(2024, 6, 3, 15, 0)) is None


def test_r23_inside_message_replaces_the_welcome_inside_hours() -> None:
    assert welcome_for(webchat(enabled=True), NY, utc(2024, 6, 3, 15, 0)) == (
        "office_hours",
        "We're here.",
    )


def test_r23_outside_message_replaces_the_welcome_outside_hours() -> None:
    assert welcome_for(webchat(enabled=True), NY, utc(2024, 6, 3, 22, 0)) == (
        "office_hours",
        "We're away; we'll answer tomorrow.",
    )


def test_r23_empty_office_hours_message_is_none_not_the_welcome() -> None:
    settings = webchat(enabled=True, inside="", outside="Closed now.")
    assert welcome_for(settings, NY, utc(2024, 6, 3, 15, 0)) is None
    assert welcome_for(settings, NY, utc(2024, 6, 3, 22, 0)) == ("office_hours", "Closed now.")


def test_r23_message_text_is_kept_as_written() -> None:
    settings = webchat(enabled=False, welcome="  Hello <b>there</b>\n")
    assert welcome_for(settings, NY, utc(2024, 6, 3, 15, 0)) == (
        "welcome",
        "  Hello <b>there</b>\n",
    )


def test_r23_default_settings_from_the_protocol() -> None:
    default = {
        "followup_email": True,
        "welcome_message": "",
        "office_hours": {
            "enabled": False,
            "days": {"mon": [["09:00", "17:00"]], "tue": []},
            "inside_message": "",
            "outside_message": "",
        },
    }
    validate(default["office_hours"])  # type: ignore[arg-type]
    assert welcome_for(default, NY, utc(2024, 6, 3, 15, 0)) is None


@pytest.mark.parametrize(
    ("days", "field"),
    [
        ({"monday": [["09:00", "17:00"]]}, "days.monday"),
        ({"Mon": [["09:00", "17:00"]]}, "days.Mon"),
        ({"mon": [["9am", "17:00"]]}, r"days.mon\[0\].start"),
        ({"mon": [["09:00", "5pm"]]}, r"days.mon\[0\].end"),
        ({"mon": [["09:00", "25:00"]]}, r"days.mon\[0\].end"),
        ({"mon": [["24:00", "24:00"]]}, r"days.mon\[0\].start"),
        ({"tue": [["09:00", "12:00"], ["17:00", "13:00"]]}, r"days.tue\[1\]: start"),
        ({"wed": [["09:00", "09:00"]]}, r"days.wed\[0\]: start"),
        ({"thu": [["09:00"]]}, r"days.thu\[0\]"),
        ({"thu": ["09:00-17:00"]}, r"days.thu\[0\]"),
        ({"fri": "09:00-17:00"}, "days.fri"),
        ({"sat": [[9, 17]]}, r"days.sat\[0\].start"),
        (["mon"], "days"),
    ],
)
def test_r23_bad_days_table_is_refused_naming_the_field(days: object, field: str) -> None:
    with pytest.raises(ValueError, match="webchat.office_hours." + field):
        validate_days(days)


def test_r23_good_days_tables_validate() -> None:
    validate_days(WEEK)
    validate_days({})
    validate_days({day: [["00:00", "24:00"]] for day in WEEKDAYS})
    validate_days({"sun": [["8:30", "12:00"], ["12:00", "18:00"]]})


@pytest.mark.parametrize(
    ("office_hours", "field"),
    [
        ({"enabled": "yes"}, "webchat.office_hours.enabled"),
        ({"enabled": True, "inside_message": 3}, "webchat.office_hours.inside_message"),
        ({"enabled": True, "days": {"xyz": []}}, "webchat.office_hours.days.xyz"),
    ],
)
def test_r23_bad_office_hours_setting_is_refused(
    office_hours: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        validate(office_hours)


def test_r23_is_inside_refuses_a_bad_table() -> None:
    with pytest.raises(ValueError, match="days.mon"):
        is_inside({"mon": [["17:00", "09:00"]]}, NY, utc(2024, 6, 3, 15, 0))


instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
zones = st.sampled_from([NY, "Europe/Rome", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"])


@given(instants, zones)
def test_r23_open_all_week_is_always_inside_and_closed_never(when: datetime, zone: str) -> None:
    always = {day: [["00:00", "24:00"]] for day in WEEKDAYS}
    assert is_inside(always, zone, when) is True
    assert is_inside({}, zone, when) is False


@given(instants, zones, st.integers(0, 23), st.integers(1, 24))
def test_r23_inside_matches_the_local_clock(
    when: datetime, zone: str, start: int, end: int
) -> None:
    if start >= end:
        return
    local = when.astimezone(ZoneInfo(zone))
    days = {WEEKDAYS[local.weekday()]: [[f"{start:02d}:00", f"{end:02d}:00"]]}
    assert is_inside(days, zone, when) is (start <= local.hour < end)
