"""R13: snooze wake-up times in the brand's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.snooze import wake_time

NY = "America/New_York"
ROME = "Europe/Rome"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def test_r13_later_today_is_three_hours_on() -> None:
    assert wake_time("later_today", NY, utc(2024, 6, 3, 15, 7, 9, 123)) == utc(
        2024, 6, 3, 18, 7, 9, 123
    )


def test_r13_later_today_late_in_the_evening_crosses_midnight() -> None:
    # 23:00 EDT + 3 h = 02:00 EDT the next day.
    assert wake_time("later_today", NY, utc(2024, 6, 4, 3, 0)) == utc(2024, 6, 4, 6, 0)


def test_r13_later_today_is_three_real_hours_across_spring_forward() -> None:
    # 00:30 EST on 10 March 2024 + 3 h of elapsed time = 04:30 EDT (wall clock +4 h).
    woke = wake_time("later_today", NY, utc(2024, 3, 10, 5, 30))
    assert woke == utc(2024, 3, 10, 8, 30)
    assert woke.astimezone(ZoneInfo(NY)).hour == 4


def test_r13_tomorrow_is_0900_brand_time_next_day() -> None:
    # Monday 3 June 2024 11:00 EDT -> Tuesday 09:00 EDT = 13:00 UTC.
    assert wake_time("tomorrow", NY, utc(2024, 6, 3, 15, 0)) == utc(2024, 6, 4, 13, 0)


def test_r13_tomorrow_before_nine_is_still_the_next_day() -> None:
    # 06:00 EDT on Monday -> Tuesday 09:00, not Monday 09:00.
    assert wake_time("tomorrow", NY, utc(2024, 6, 3, 10, 0)) == utc(2024, 6, 4, 13, 0)


def test_r13_tomorrow_uses_the_brand_calendar_day() -> None:
    # Tuesday 02:00 UTC is Monday 22:00 in New York: tomorrow is Tuesday 09:00 EDT.
    assert wake_time("tomorrow", NY, utc(2024, 6, 4, 2, 0)) == utc(2024, 6, 4, 13, 0)
    # In Rome the same instant is Tuesday 04:00: tomorrow is Wednesday 09:00 CEST.
    assert wake_time("tomorrow", ROME, utc(2024, 6, 4, 2, 0)) == utc(2024, 6, 5, 7, 0)


def test_r13_tomorrow_across_march_transition_new_york() -> None:
    # Sat 9 March 2024 12:00 EST; Sunday 09:00 is EDT (UTC-4) = 13:00 UTC, 20 h later.
    now = utc(2024, 3, 9, 17, 0)
    woke = wake_time("tomorrow", NY, now)
    assert woke == utc(2024, 3, 10, 13, 0)
    assert woke - now == timedelta(hours=20)


def test_r13_tomorrow_across_november_transition_new_york() -> None:
    # Sat 2 Nov 2024 12:00 EDT; Sunday 09:00 is EST (UTC-5) = 14:00 UTC, 22 h later.
    now = utc(2024, 11, 2, 16, 0)
    woke = wake_time("tomorrow", NY, now)
    assert woke == utc(2024, 11, 3, 14, 0)
    assert woke - now == timedelta(hours=22)


def test_r13_tomorrow_from_the_repeated_hour_new_york() -> None:
    # Both 01:30s of 3 November 2024 wake on Monday 4 November 09:00 EST.
    for now in (utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30)):
        assert wake_time("tomorrow", NY, now) == utc(2024, 11, 4, 14, 0)


def test_r13_tomorrow_across_dst_europe_rome() -> None:
    # Sat 30 March 2024 18:00 CET -> Sun 31 March 09:00 CEST = 07:00 UTC.
    assert wake_time("tomorrow", ROME, utc(2024, 3, 30, 17, 0)) == utc(2024, 3, 31, 7, 0)
    # Sat 26 Oct 2024 18:00 CEST -> Sun 27 Oct 09:00 CET = 08:00 UTC.
    assert wake_time("tomorrow", ROME, utc(2024, 10, 26, 16, 0)) == utc(2024, 10, 27, 8, 0)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2024, 6, 3, 15, 0), utc(2024, 6, 10, 13, 0)),  # Monday -> a week on
        (utc(2024, 6, 3, 10, 0), utc(2024, 6, 10, 13, 0)),  # Monday before 09:00 -> a week on
        (utc(2024, 6, 4, 15, 0), utc(2024, 6, 10, 13, 0)),  # Tuesday
        (utc(2024, 6, 8, 15, 0), utc(2024, 6, 10, 13, 0)),  # Saturday
        (utc(2024, 6, 9, 15, 0), utc(2024, 6, 10, 13, 0)),  # Sunday -> tomorrow
        (utc(2024, 6, 10, 2, 0), utc(2024, 6, 10, 13, 0)),  # Sunday 22:00 EDT (Monday UTC)
    ],
)
def test_r13_next_week_is_next_monday_0900(now: datetime, expected: datetime) -> None:
    assert wake_time("next_week", NY, now) == expected


def test_r13_next_week_across_march_transition_new_york() -> None:
    # Wed 6 March 2024 (EST) -> Mon 11 March 09:00 EDT = 13:00 UTC.
    assert wake_time("next_week", NY, utc(2024, 3, 6, 15, 0)) == utc(2024, 3, 11, 13, 0)


def test_r13_next_week_across_november_transition_new_york() -> None:
    # Wed 30 Oct 2024 (EDT) -> Mon 4 Nov 09:00 EST = 14:00 UTC.
    assert wake_time("next_week", NY, utc(2024, 10, 30, 15, 0)) == utc(2024, 11, 4, 14, 0)


def test_r13_next_week_across_dst_europe_rome() -> None:
    # Thu 28 March 2024 (CET) -> Mon 1 April 09:00 CEST = 07:00 UTC.
    assert wake_time("next_week", ROME, utc(2024, 3, 28, 12, 0)) == utc(2024, 4, 1, 7, 0)
    # Mon 21 Oct 2024 (CEST) -> Mon 28 Oct 09:00 CET = 08:00 UTC.
    assert wake_time("next_week", ROME, utc(2024, 10, 21, 12, 0)) == utc(2024, 10, 28, 8, 0)


def test_r13_zone_may_be_a_tzinfo() -> None:
    assert wake_time("tomorrow", ZoneInfo(NY), utc(2024, 6, 3, 15, 0)) == utc(2024, 6, 4, 13, 0)


def test_r13_exact_time_iso_with_offset() -> None:
    now = utc(2024, 6, 3, 15, 0)
    woke = wake_time("2024-06-05T10:30:00-04:00", NY, now)
    assert woke == utc(2024, 6, 5, 14, 30)
    assert woke.tzinfo is UTC
    assert wake_time("2024-06-05T14:30:00Z", NY, now) == utc(2024, 6, 5, 14, 30)
    assert wake_time("2024-06-05T16:30:00.250000+02:00", NY, now) == utc(
        2024, 6, 5, 14, 30, 0, 250000
    )


def test_r13_exact_time_as_aware_datetime() -> None:
    now = utc(2024, 6, 3, 15, 0)
    at = datetime(2024, 6, 3, 20, 0, tzinfo=timezone(timedelta(hours=2)))
    woke = wake_time(at, NY, now)
    assert woke == utc(2024, 6, 3, 18, 0)
    assert woke.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "until",
    [
        "2024-06-03T15:00:00+00:00",  # exactly now
        "2024-06-03T10:59:59-04:00",  # a second ago
        "2020-01-01T00:00:00Z",
    ],
)
def test_r13_exact_time_not_in_the_future_is_refused(until: str) -> None:
    with pytest.raises(ValueError, match="^until: must be in the future"):
        wake_time(until, NY, utc(2024, 6, 3, 15, 0))


@pytest.mark.parametrize(
    "until",
    ["2024-06-05T10:30:00", "soon", "", "next_month", "LATER_TODAY", "2024-13-01T00:00:00Z"],
)
def test_r13_unknown_or_naive_until_is_refused(until: str) -> None:
    with pytest.raises(ValueError, match="^until: "):
        wake_time(until, NY, utc(2024, 6, 3, 15, 0))


def test_r13_naive_datetime_until_is_refused() -> None:
    with pytest.raises(ValueError, match="^until: "):
        wake_time(datetime(2030, 1, 1), NY, utc(2024, 6, 3, 15, 0))


def test_r13_unknown_brand_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="account.timezone"):
        wake_time("tomorrow", "Nowhere/Town", utc(2024, 6, 3, 15, 0))


instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
zones = st.sampled_from([NY, ROME, "Asia/Kolkata", "Australia/Lord_Howe", "America/Santiago"])


@given(instants, zones)
def test_r13_presets_wake_in_the_future_at_0900_local(now: datetime, zone: str) -> None:
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    for preset in ("tomorrow", "next_week"):
        woke = wake_time(preset, zone, now)
        local = woke.astimezone(tz)
        assert woke > now
        assert (local.hour, local.minute, local.second, local.microsecond) == (9, 0, 0, 0)
        if preset == "tomorrow":
            assert (local.date() - today).days == 1
        else:
            assert local.weekday() == 0
            assert 1 <= (local.date() - today).days <= 7
    assert wake_time("later_today", zone, now) - now == timedelta(hours=3)
