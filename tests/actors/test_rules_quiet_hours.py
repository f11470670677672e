"""R27: quiet hours for SMS in the profile's local time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.quiet_hours import (
    QuietHours,
    check,
    local_to_utc,
    next_allowed,
    parse_clock,
    validate,
    zone_named,
)

DEFAULT = {"start": "08:00", "end": "20:00"}
NY = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# 2024-06-01: New York is on EDT (UTC-4).
@pytest.mark.parametrize(
    ("now", "held_at"),
    [
        (utc(2024, 6, 1, 11, 59), "07:59"),
        (utc(2024, 6, 1, 12, 0), None),  # 08:00 local: start is inclusive
        (utc(2024, 6, 1, 16, 0), None),
        (utc(2024, 6, 1, 23, 59, 59), None),  # 19:59:59 local
        (utc(2024, 6, 2, 0, 0), "20:00"),  # end is exclusive
        (utc(2024, 6, 2, 3, 30), "23:30"),
        (utc(2024, 6, 2, 4, 0), "00:00"),
        (utc(2024, 6, 2, 8, 15), "04:15"),
    ],
)
def test_r27_held_outside_0800_2000_local(now: datetime, held_at: str | None) -> None:
    expected = None if held_at is None else QuietHours(local_time=held_at, timezone=NY)
    assert check(NY, DEFAULT, now) == expected


def test_r27_seconds_before_start_are_still_held() -> None:
    assert check(NY, DEFAULT, utc(2024, 6, 1, 11, 59, 59)) == QuietHours("07:59", NY)


@pytest.mark.parametrize("zone", [None, "", "Not/A_Zone", "../../etc/passwd", "/etc/localtime"])
def test_r27_no_zone_or_unknown_zone_is_never_held(zone: str | None) -> None:
    night = utc(2024, 6, 2, 7, 0)
    assert check(zone, DEFAULT, night) is None
    assert next_allowed(zone, DEFAULT, night) == night


def test_r27_uses_the_profiles_zone_not_utc() -> None:
    now = utc(2024, 6, 1, 3, 0)  # 03:00 UTC, 08:30 in India, 23:00 in New York
    assert check("Asia/Kolkata", DEFAULT, now) is None
    assert check(NY, DEFAULT, now) == QuietHours("23:00", NY)
    assert check("UTC", DEFAULT, now) == QuietHours("03:00", "UTC")


def test_r27_next_allowed_is_later_today_before_start() -> None:
    assert next_allowed(NY, DEFAULT, utc(2024, 6, 1, 9, 0)) == utc(2024, 6, 1, 12, 0)


def test_r27_next_allowed_is_tomorrow_after_end() -> None:
    # 21:00 EDT on 1 June -> 08:00 EDT on 2 June.
    assert next_allowed(NY, DEFAULT, utc(2024, 6, 2, 1, 0)) == utc(2024, 6, 2, 12, 0)


def test_r27_next_allowed_is_now_when_not_held() -> None:
    now = utc(2024, 6, 1, 15, 30)
    assert next_allowed(NY, DEFAULT, now) == now


def test_r27_next_allowed_across_spring_forward_new_york() -> None:
    # 21:00 EST on Sat 9 March 2024; clocks go forward that night: 08:00 EDT = 12:00 UTC.
    now = utc(2024, 3, 10, 2, 0)
    assert check(NY, DEFAULT, now) == QuietHours("21:00", NY)
    assert next_allowed(NY, DEFAULT, now) == utc(2024, 3, 10, 12, 0)


def test_r27_next_allowed_across_fall_back_new_york() -> None:
    # 21:00 EDT on Sat 2 Nov 2024; clocks go back that night: 08:00 EST = 13:00 UTC.
    now = utc(2024, 11, 3, 1, 0)
    assert check(NY, DEFAULT, now) == QuietHours("21:00", NY)
    assert next_allowed(NY, DEFAULT, now) == utc(2024, 11, 3, 13, 0)
    # In the repeated hour (01:30 twice) it is still held, and still 08:00 EST.
    for repeated in (utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30)):
        assert check(NY, DEFAULT, repeated) == QuietHours("01:30", NY)
        assert next_allowed(NY, DEFAULT, repeated) == utc(2024, 11, 3, 13, 0)


def test_r27_next_allowed_across_dst_europe_rome() -> None:
    rome = "Europe/Rome"
    # Sat 30 March 2024 22:00 CET -> Sun 31 March 08:00 CEST (UTC+2).
    assert next_allowed(rome, DEFAULT, utc(2024, 3, 30, 21, 0)) == utc(2024, 3, 31, 6, 0)
    # Sat 26 Oct 2024 22:00 CEST -> Sun 27 Oct 08:00 CET (UTC+1).
    assert next_allowed(rome, DEFAULT, utc(2024, 10, 26, 20, 0)) == utc(2024, 10, 27, 7, 0)


def test_r27_custom_window() -> None:
    hours = {"start": "09:30", "end": "17:00"}
    assert check(NY, hours, utc(2024, 6, 1, 13, 29)) == QuietHours("09:29", NY)
    assert check(NY, hours, utc(2024, 6, 1, 13, 30)) is None
    assert check(NY, hours, utc(2024, 6, 1, 21, 0)) == QuietHours("17:00", NY)
    assert next_allowed(NY, hours, utc(2024, 6, 1, 21, 0)) == utc(2024, 6, 2, 13, 30)


def test_r27_window_may_cross_midnight() -> None:
    night_shift = {"start": "22:00", "end": "06:00"}
    assert check("UTC", night_shift, utc(2024, 6, 1, 23, 0)) is None
    assert check("UTC", night_shift, utc(2024, 6, 1, 5, 59)) is None
    assert check("UTC", night_shift, utc(2024, 6, 1, 6, 0)) == QuietHours("06:00", "UTC")
    assert next_allowed("UTC", night_shift, utc(2024, 6, 1, 12, 0)) == utc(2024, 6, 1, 22, 0)


def test_r27_equal_start_and_end_means_no_quiet_hours() -> None:
    assert check(NY, {"start": "08:00", "end": "08:00"}, utc(2024, 6, 2, 7, 0)) is None


def test_r27_end_of_day_end() -> None:
    hours = {"start": "08:00", "end": "24:00"}
    assert check("UTC", hours, utc(2024, 6, 1, 23, 59)) is None
    assert check("UTC", hours, utc(2024, 6, 2, 0, 0)) == QuietHours("00:00", "UTC")


def test_r27_missing_keys_use_the_defaults() -> None:
    assert check(NY, {}, utc(2024, 6, 1, 11, 0)) == QuietHours("07:00", NY)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"start": "8am", "end": "20:00"}, "quiet_hours.start"),
        ({"start": "08:00", "end": "25:00"}, "quiet_hours.end"),
        ({"start": "24:00", "end": "20:00"}, "quiet_hours.start"),
        ({"start": "08:60", "end": "20:00"}, "quiet_hours.start"),
        ({"start": 8, "end": "20:00"}, "quiet_hours.start"),
        ({"start": "08:00", "end": ""}, "quiet_hours.end"),
    ],
)
def test_r27_bad_settings_are_refused_naming_the_field(
    settings: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        validate(settings)


def test_r27_good_settings_validate() -> None:
    validate(DEFAULT)
    validate({"start": "8:00", "end": "24:00"})


def test_r27_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now"):
        check(NY, DEFAULT, datetime(2024, 6, 1, 12, 0))


def test_r27_parse_clock() -> None:
    assert parse_clock("00:00", "f") == 0
    assert parse_clock("08:05", "f") == 485
    assert parse_clock("23:59", "f") == 1439
    assert parse_clock("24:00", "f", allow_end_of_day=True) == 1440
    with pytest.raises(ValueError, match="^f: "):
        parse_clock("24:00", "f")


def test_r27_local_to_utc_in_a_dst_gap_is_the_jump() -> None:
    ny = ZoneInfo(NY)
    # 02:30 does not exist on 10 March 2024 in New York: the clock jumps at 07:00 UTC.
    assert local_to_utc(date(2024, 3, 10), 150, ny) == utc(2024, 3, 10, 7, 0)
    # 01:30 happens twice on 3 November 2024: the first time (EDT) is meant.
    assert local_to_utc(date(2024, 11, 3), 90, ny) == utc(2024, 11, 3, 5, 30)
    # Santiago skips midnight on 8 September 2024 (00:00 -> 01:00, UTC-4 -> UTC-3).
    santiago = ZoneInfo("America/Santiago")
    assert local_to_utc(date(2024, 9, 8), 0, santiago) == utc(2024, 9, 8, 4, 0)


def test_r27_start_inside_a_dst_gap_opens_at_the_jump() -> None:
    hours = {"start": "00:30", "end": "20:00"}
    zone = "America/Santiago"
    # 23:00 on 7 September (UTC-4); 00:30 never comes that night, so 01:00 (UTC-3).
    assert next_allowed(zone, hours, utc(2024, 9, 8, 3, 0)) == utc(2024, 9, 8, 4, 0)


def test_r27_window_wholly_inside_a_dst_gap_opens_the_next_day() -> None:
    hours = {"start": "02:00", "end": "02:30"}
    # 02:00-02:30 does not happen on 10 March 2024 in New York: 11 March, 02:00 EDT.
    assert next_allowed(NY, hours, utc(2024, 3, 9, 8, 0)) == utc(2024, 3, 11, 6, 0)


def test_r27_zone_named() -> None:
    assert zone_named("Europe/Rome") == ZoneInfo("Europe/Rome")
    assert zone_named("Nowhere/Special") is None
    assert zone_named(None) is None


ZONES = [NY, "Europe/Rome", "Asia/Kolkata", "America/Santiago", "Australia/Lord_Howe", "UTC"]
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
clocks = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))


@given(st.sampled_from(ZONES), instants, clocks, clocks)
def test_r27_next_allowed_is_never_held_and_never_in_the_past(
    zone: str, now: datetime, start: str, end: str
) -> None:
    hours = {"start": start, "end": end}
    at = next_allowed(zone, hours, now)
    assert at >= now
    # At most a day and a bit, or two when the window lies wholly in a DST gap.
    assert at - now <= timedelta(hours=50)
    assert check(zone, hours, at) is None
    if check(zone, hours, now) is None:
        assert at == now
    else:
        # Nothing between now and then is allowed: it is the *next* allowed time.
        assert check(zone, hours, at - timedelta(seconds=1)) is not None


@given(st.sampled_from(ZONES), instants)
def test_r27_held_sends_report_the_local_time(zone: str, now: datetime) -> None:
    held = check(zone, DEFAULT, now)
    local = now.astimezone(ZoneInfo(zone))
    if held is None:
        assert 8 <= local.hour < 20
    else:
        assert held == QuietHours(local.strftime("%H:%M"), zone)
        assert local.hour < 8 or local.hour >= 20
