"""Accepted schedules: the next switch time and the wanted state, across midnight and DST."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from cloud_sync.analytics import calendar
from cloud_sync.analytics.schedule import next_switch, wants_on

BERLIN = ZoneInfo("Europe/Berlin")


def ms(y: int, mo: int, d: int, h: int, mi: int = 0, fold: int = 0) -> int:
    return calendar.to_ms(datetime(y, mo, d, h, mi, tzinfo=BERLIN, fold=fold))


def test_next_switch_is_the_next_on_or_off_time() -> None:
    assert next_switch("11:00", "12:00", ms(2025, 11, 3, 10), BERLIN) == ms(2025, 11, 3, 11)
    assert next_switch("11:00", "12:00", ms(2025, 11, 3, 11), BERLIN) == ms(2025, 11, 3, 12)
    assert next_switch("11:00", "12:00", ms(2025, 11, 3, 13), BERLIN) == ms(2025, 11, 4, 11)


def test_window_past_midnight_wraps() -> None:
    assert wants_on("23:00", "02:15", ms(2025, 11, 3, 23, 30), BERLIN)
    assert wants_on("23:00", "02:15", ms(2025, 11, 4, 2, 0), BERLIN)
    assert not wants_on("23:00", "02:15", ms(2025, 11, 4, 2, 15), BERLIN)
    assert next_switch("23:00", "02:15", ms(2025, 11, 3, 23, 30), BERLIN) == ms(2025, 11, 4, 2, 15)


def test_switch_times_follow_local_time_over_the_dst_change() -> None:
    # the night clocks go back: 01:00 local on Oct 26 is 23:00 UTC, on Oct 27 00:00 UTC
    first = next_switch("01:00", "02:00", ms(2025, 10, 25, 12), BERLIN)
    second = next_switch("01:00", "02:00", ms(2025, 10, 26, 12), BERLIN)
    assert second - first == 25 * 3_600_000
    assert calendar.iso_local(second, BERLIN).startswith("2025-10-27T01:00")


def test_periods_resolve_in_the_home_zone_and_name_bad_input() -> None:
    import pytest

    from cloud_sync.analytics.periods import BadPeriod, resolve

    now = ms(2025, 10, 26, 15)
    lo, hi = resolve("today", None, None, now, BERLIN)
    assert (lo, hi) == (ms(2025, 10, 26, 0), ms(2025, 10, 27, 0))
    assert hi - lo == 25 * 3_600_000
    assert resolve(None, "2025-10-01", "2025-11-01", now, BERLIN) == resolve("month", None, None,
                                                                             now, BERLIN)
    assert resolve("last_month", None, None, now, BERLIN)[0] == ms(2025, 9, 1, 0)
    assert resolve(None, "2025-10-26T02:00:00+01:00", str(ms(2025, 10, 26, 4)), now,
                   BERLIN)[0] == ms(2025, 10, 26, 2, fold=1)
    with pytest.raises(BadPeriod, match="from: 'yesterdayish' is not a date"):
        resolve(None, "yesterdayish", "2025-11-01", now, BERLIN)
    with pytest.raises(BadPeriod, match="period: 'decade' is not one of"):
        resolve("decade", None, None, now, BERLIN)
    with pytest.raises(BadPeriod, match="to: must be after from"):
        resolve(None, "2025-11-01", "2025-10-01", now, BERLIN)
