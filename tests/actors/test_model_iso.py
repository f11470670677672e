"""`iso`, the wire's time format, keeps the last whole second it formatted: it must give
exactly what `datetime` gives, including its rounding of microseconds."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.model import iso

LATEST = datetime(9000, 1, 1, tzinfo=UTC).timestamp()


def reference(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def test_iso_rounds_microseconds_half_to_even_across_second_boundaries() -> None:
    cases = [0.0, 1.9999995, 1.9999994999, 1.0000005, 2.5e-7, 1_764_716_399.9999996]
    cases += [k + j * 0.5e-6 for k in range(1_764_716_390, 1_764_716_400) for j in range(4)]
    for epoch in cases + list(reversed(cases)):  # same second, next second, back again
        assert iso(epoch) == reference(epoch), epoch
    assert iso(1_764_716_399.25) == "2025-12-02T22:59:59.250000+00:00"


@given(st.floats(min_value=-86_400.0, max_value=LATEST))
def test_iso_is_datetimes_format(epoch: float) -> None:
    assert iso(epoch) == reference(epoch)
    assert iso(epoch + 0.5) == reference(epoch + 0.5)  # usually the same second, cached
