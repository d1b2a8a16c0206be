"""Rollup maths with known answers: counters, resets, replacements, gaps, power, time zones."""

from __future__ import annotations

from datetime import date

import pytest

from cloud_sync.analytics import calendar
from cloud_sync.analytics.rollup import (
    HOUR_MS,
    QUARTER_MS,
    CounterRules,
    Flag,
    Sample,
    counter_buckets,
    dedupe,
    power_buckets,
    recompute_window,
)

T0 = 1_700_000_400_000 - 1_700_000_400_000 % HOUR_MS  # a whole UTC hour
MIN = 60_000


def wh(buckets: dict[int, object]) -> dict[int, float]:
    return {k: round(v.wh, 6) for k, v in buckets.items()}  # type: ignore[attr-defined]


def test_counter_difference_lands_in_the_bucket_it_happened_in() -> None:
    samples = [Sample(T0 + i * 5 * MIN, 1000.0 + 50 * i) for i in range(7)]  # 50 Wh / 5 min
    out = counter_buckets(samples, T0, T0 + 30 * MIN)
    assert wh(out) == {T0: 150.0, T0 + QUARTER_MS: 150.0}
    assert all(b.flags == Flag.NONE for b in out.values())


def test_interval_across_a_bucket_edge_is_split_by_time() -> None:
    out = counter_buckets([Sample(T0 + 10 * MIN, 0.0), Sample(T0 + 20 * MIN, 100.0)],
                          T0, T0 + HOUR_MS)
    assert wh(out) == {T0: 50.0, T0 + QUARTER_MS: 50.0}


def test_only_the_part_inside_the_window_is_counted() -> None:
    out = counter_buckets([Sample(T0 - 15 * MIN, 0.0), Sample(T0 + 15 * MIN, 300.0)],
                          T0, T0 + HOUR_MS)
    assert wh(out) == {T0: 150.0}


def test_reset_to_zero_counts_the_new_value() -> None:
    samples = [Sample(T0, 5_000_000.0), Sample(T0 + MIN, 5_000_020.0), Sample(T0 + 2 * MIN, 15.0),
               Sample(T0 + 3 * MIN, 35.0)]
    out = counter_buckets(samples, T0, T0 + QUARTER_MS)
    assert wh(out) == {T0: 55.0}
    assert out[T0].flags == Flag.RESET


def test_replaced_meter_starting_elsewhere_counts_zero_for_that_interval() -> None:
    samples = [Sample(T0, 5_000_000.0), Sample(T0 + MIN, 5_000_020.0),
               Sample(T0 + 2 * MIN, 123_456.0), Sample(T0 + 3 * MIN, 123_476.0)]
    out = counter_buckets(samples, T0, T0 + QUARTER_MS)
    assert wh(out) == {T0: 40.0}
    assert out[T0].flags & Flag.REPLACED


def test_replacement_with_a_higher_start_is_not_energy() -> None:
    samples = [Sample(T0, 100.0), Sample(T0 + MIN, 120.0), Sample(T0 + 2 * MIN, 9_000_000.0),
               Sample(T0 + 3 * MIN, 9_000_030.0)]
    assert wh(counter_buckets(samples, T0, T0 + QUARTER_MS)) == {T0: 50.0}


def test_gap_keeps_the_total_and_spreads_it_linearly() -> None:
    samples = [Sample(T0, 0.0), Sample(T0 + 6 * HOUR_MS, 6_000.0)]
    out = counter_buckets(samples, T0, T0 + 6 * HOUR_MS)
    assert len(out) == 24
    assert sum(b.wh for b in out.values()) == pytest.approx(6_000.0)
    assert all(b.wh == pytest.approx(250.0) and b.flags == Flag.GAP for b in out.values())


def test_late_backfill_fills_the_gap_exactly() -> None:
    live = [Sample(T0, 0.0), Sample(T0 + 2 * HOUR_MS, 1_000.0)]
    backfill = [Sample(T0 + HOUR_MS, 900.0)]
    merged = dedupe([*live, *backfill])
    out = counter_buckets(merged, T0, T0 + 2 * HOUR_MS)
    first_hour = sum(b.wh for k, b in out.items() if k < T0 + HOUR_MS)
    assert first_hour == pytest.approx(900.0)
    assert sum(b.wh for b in out.values()) == pytest.approx(1_000.0)


def test_recompute_window_reaches_the_neighbours_of_the_dirty_range() -> None:
    samples = [Sample(T0 + 7 * MIN, 0.0), Sample(T0 + 3 * HOUR_MS + 1, 1.0)]
    lo, hi = recompute_window(samples, T0 + HOUR_MS, T0 + 2 * HOUR_MS)
    assert (lo, hi) == (T0, T0 + 3 * HOUR_MS + QUARTER_MS)


def test_power_holds_until_the_next_reading_and_splits_import_export() -> None:
    samples = [Sample(T0, 1200.0), Sample(T0 + 5 * MIN, -600.0), Sample(T0 + 10 * MIN, 0.0),
               Sample(T0 + 15 * MIN, 0.0)]
    imp, exp = power_buckets(samples, T0, T0 + QUARTER_MS)
    assert wh(imp) == {T0: 100.0}
    assert wh(exp) == {T0: 50.0}
    assert imp[T0].flags == Flag.INTEGRATED


def test_power_silence_beyond_the_hold_time_counts_nothing() -> None:
    rules = CounterRules(max_hold_ms=5 * MIN)
    imp, _ = power_buckets([Sample(T0, 600.0), Sample(T0 + HOUR_MS, 600.0)], T0,
                           T0 + HOUR_MS, rules)
    assert sum(b.wh for b in imp.values()) == pytest.approx(50.0)
    assert imp[T0 + 3 * QUARTER_MS].flags == Flag.GAP


def test_berlin_autumn_day_has_25_hours_with_02_00_twice() -> None:
    tz = calendar.zone("Europe/Berlin")
    lo, hi = calendar.day_bounds(date(2025, 10, 26), tz)
    assert (hi - lo) == 25 * HOUR_MS
    hours = calendar.hours_between(lo, hi, tz)
    assert len(hours) == 25
    labels = [calendar.iso_local(h, tz)[11:16] for h in hours]
    assert labels.count("02:00") == 2


def test_berlin_spring_day_has_23_hours() -> None:
    tz = calendar.zone("Europe/Berlin")
    lo, hi = calendar.day_bounds(date(2025, 3, 30), tz)
    assert hi - lo == 23 * HOUR_MS
    assert len(calendar.hours_between(lo, hi, tz)) == 23


def test_half_hour_zone_hours_start_at_half_past_utc() -> None:
    tz = calendar.zone("Asia/Kolkata")
    start = calendar.hour_start(T0 + 10 * MIN, tz)
    assert (T0 + 10 * MIN - start) == 40 * MIN


def test_unknown_zone_names_the_field() -> None:
    with pytest.raises(calendar.UnknownZone, match="timezone: 'Mars/Olympus'"):
        calendar.zone("Mars/Olympus")


def test_month_bounds_in_zone() -> None:
    tz = calendar.zone("Europe/Berlin")
    lo, hi = calendar.month_bounds("2025-10", tz)
    assert calendar.iso_local(lo, tz).startswith("2025-10-01T00:00")
    assert calendar.iso_local(hi, tz).startswith("2025-11-01T00:00")
    assert hi - lo == 31 * 24 * HOUR_MS + HOUR_MS
