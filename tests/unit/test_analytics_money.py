"""Tariffs, costs, insights and recommendations on crafted data with known answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cloud_sync.analytics import calendar
from cloud_sync.analytics.costs import cost_report
from cloud_sync.analytics.home import HomeBucket, MeterRole, home_buckets
from cloud_sync.analytics.insights import (
    anomalies,
    baseload,
    daily_consumption,
    shares,
    top_consumers,
)
from cloud_sync.analytics.recommend import FlexibleLoad, recommend
from cloud_sync.analytics.tariffs import (
    PriceBook,
    PricePoint,
    TariffError,
    parse_price_csv,
    parse_tariff,
)

BERLIN = ZoneInfo("Europe/Berlin")
Q = 900_000
FIXED = {"import_pricing": {"kind": "fixed", "price": 0.30}, "feed_in": {"price": 0.08},
         "standing_charge_per_day": 0.50}
TOU = {"import_pricing": {"kind": "tou", "default_price": 0.40, "windows": [
    {"start": "00:00", "end": "06:00", "price": 0.20},
    {"days": ["sat", "sun"], "start": "06:00", "end": "24:00", "price": 0.30}]}}


def at(day: date, hh: int, mm: int = 0) -> int:
    return calendar.to_ms(datetime(day.year, day.month, day.day, hh, mm, tzinfo=BERLIN))


def book(body: dict[str, object], points: list[PricePoint] | None = None) -> PriceBook:
    return PriceBook([(0, parse_tariff(body))], points or [], BERLIN)


Slot = Callable[[int], tuple[float, float, float, dict[str, float]]]


def days_of(first: date, n: int, slot: Slot) -> list[HomeBucket]:
    """``slot(quarter_index)`` -> (import Wh, export Wh, pv Wh, loads) for every quarter."""
    out = []
    for k in range(n):
        lo, hi = calendar.day_bounds(first + timedelta(days=k), BERLIN)
        for start in range(lo, hi, Q):
            local = calendar.local(start, BERLIN)
            imp, exp, pv, loads = slot((local.hour * 60 + local.minute) // 15)
            out.append(HomeBucket(start, imp, exp, pv, dict(loads), has_grid=True))
    return out


# -- tariffs and costs ------------------------------------------------------------------------

def test_fixed_tariff_costs_import_minus_feed_in_plus_standing_charge() -> None:
    day = date(2025, 11, 3)
    buckets = [HomeBucket(at(day, 10), 2000.0, 1000.0, 0.0, has_grid=True)]
    lo, hi = calendar.day_bounds(day, BERLIN)
    report = cost_report(buckets, book(FIXED), lo, hi)
    line = report.days["2025-11-03"]
    assert (line.import_cost, line.export_credit, line.standing_charge) == pytest.approx(
        (0.60, 0.08, 0.50))
    assert line.net_cost == pytest.approx(1.02)
    assert report.months["2025-11"].net_cost == pytest.approx(1.02)


def test_time_of_use_prices_by_local_time_and_weekday() -> None:
    b = book(TOU)
    monday, saturday = date(2025, 11, 3), date(2025, 11, 8)
    assert b.import_price(at(monday, 3)) == 0.20
    assert b.import_price(at(monday, 12)) == 0.40
    assert b.import_price(at(saturday, 12)) == 0.30
    assert b.import_price(at(saturday, 5, 45)) == 0.20


def test_time_of_use_window_past_midnight_belongs_to_its_start_day() -> None:
    night = {"import_pricing": {"kind": "tou", "default_price": 0.4, "windows": [
        {"days": ["fri"], "start": "22:00", "end": "06:00", "price": 0.1}]}}
    b = book(night)
    friday = date(2025, 11, 7)
    assert b.import_price(at(friday, 23)) == 0.1
    assert b.import_price(at(friday + timedelta(days=1), 5)) == 0.1  # Saturday 05:00
    assert b.import_price(at(friday, 5)) == 0.4  # Friday 05:00 follows Thursday
    assert b.import_price(at(friday + timedelta(days=1), 23)) == 0.4


def test_time_of_use_on_the_25_hour_day_prices_both_02_00_hours() -> None:
    b = book(TOU)
    lo, hi = calendar.day_bounds(date(2025, 10, 26), BERLIN)
    buckets = [HomeBucket(s, 250.0, 0.0, 0.0, has_grid=True) for s in range(lo, hi, Q)]
    line = cost_report(buckets, b, lo, hi).days["2025-10-26"]  # a Sunday
    # 7 night hours (00-06 with 02:00 twice) at 0.20, 18 hours at the weekend 0.30
    assert line.import_kwh == pytest.approx(25.0)
    assert line.import_cost == pytest.approx(7 * 0.20 + 18 * 0.30)


def test_dynamic_prices_with_surcharge_fallback_and_dynamic_feed_in() -> None:
    day = date(2025, 11, 3)
    points = [PricePoint(at(day, 12), at(day, 13), 0.05, 0.04)]
    dyn = {"import_pricing": {"kind": "dynamic", "surcharge": 0.15},
           "feed_in": {"kind": "dynamic", "price": 0.07}}
    b = book(dyn, points)
    assert b.import_price(at(day, 12, 30)) == pytest.approx(0.20)
    assert b.export_price(at(day, 12, 30)) == 0.04
    assert b.import_price(at(day, 14)) is None  # no posted price and no fallback
    assert b.export_price(at(day, 14)) == 0.07
    buckets = [HomeBucket(at(day, 12), 1000.0, 0.0, 0.0, has_grid=True),
               HomeBucket(at(day, 14), 3000.0, 0.0, 0.0, has_grid=True)]
    lo, hi = calendar.day_bounds(day, BERLIN)
    line = cost_report(buckets, b, lo, hi).total
    assert line.import_cost == pytest.approx(0.20)
    assert line.unpriced_kwh == pytest.approx(3.0)  # shown, never costed at zero
    with_fallback = book({**dyn, "import_pricing": {"kind": "dynamic", "surcharge": 0.15,
                                                    "fallback_price": 0.35}}, points)
    assert cost_report(buckets, with_fallback, lo, hi).total.import_cost == pytest.approx(1.25)


def test_device_cost_uses_the_effective_price_of_grid_and_own_pv() -> None:
    # 2 kWh consumed: 1 from PV (which would have earned 0.08), 1 from the grid at 0.30
    day = date(2025, 11, 3)
    bucket = HomeBucket(at(day, 12), 1000.0, 0.0, 1000.0, {"boiler": 2000.0}, has_grid=True)
    lo, hi = calendar.day_bounds(day, BERLIN)
    line = cost_report([bucket], book(FIXED), lo, hi).total
    assert line.devices["boiler"] == pytest.approx(0.30 + 0.08)


def test_tariff_change_applies_from_its_start() -> None:
    day = date(2025, 11, 3)
    change = at(day, 12)
    b = PriceBook([(0, parse_tariff(FIXED)), (change, parse_tariff(TOU))], [], BERLIN)
    assert b.import_price(change - Q) == 0.30
    assert b.import_price(change) == 0.40


def test_bad_tariff_names_the_field() -> None:
    with pytest.raises(TariffError, match=r"import_pricing\.tou\.windows\.0\.start"):
        parse_tariff({"import_pricing": {"kind": "tou", "default_price": 0.3,
                                         "windows": [{"start": "25:00", "end": "06:00",
                                                      "price": 0.1}]}})
    with pytest.raises(TariffError, match=r"import_pricing"):
        parse_tariff({"import_pricing": {"kind": "monthly", "price": 1}})


def test_price_csv_parses_and_names_the_bad_line() -> None:
    text = ("start,end,import_price,export_price\n"
            "2025-11-03T00:00:00+01:00,2025-11-03T01:00:00+01:00,0.1234,0.05\n"
            "2025-11-03T00:00:00Z,2025-11-03T00:15:00Z,0.2\n")
    points = parse_price_csv(text)
    assert points[0] == PricePoint(at(date(2025, 11, 3), 0), at(date(2025, 11, 3), 1),
                                   0.1234, 0.05)
    assert points[1].export_price is None
    with pytest.raises(TariffError, match="line 2: times need an offset"):
        parse_price_csv("start,end,import_price\n2025-11-03T00:00:00,2025-11-03T01:00:00,0.1\n")
    with pytest.raises(TariffError, match=r"line 1: .*prices as decimals"):
        parse_price_csv("2025-11-03T00:00:00Z,2025-11-03T01:00:00Z,cheap\n")
    with pytest.raises(TariffError, match="quarter hours"):
        parse_price_csv("2025-11-03T00:05:00Z,2025-11-03T01:00:00Z,0.1\n")


# -- insights ---------------------------------------------------------------------------------

def test_self_sufficiency_and_self_consumption_per_bucket() -> None:
    buckets = [HomeBucket(0, 0.0, 600.0, 1000.0, has_grid=True),  # 400 used, 600 exported
               HomeBucket(Q, 1000.0, 0.0, 0.0, has_grid=True)]
    s = shares(buckets)
    assert s.consumption_kwh == pytest.approx(1.4)
    assert s.self_sufficiency_pct == pytest.approx(100 * 0.4 / 1.4)
    assert s.self_consumption_pct == pytest.approx(40.0)


def test_baseload_is_the_median_of_daily_quietest_hours() -> None:
    def slot(q: int) -> tuple[float, float, float, dict[str, float]]:
        w = 120.0 if 2 * 4 <= q < 3 * 4 else 600.0  # 02:00-03:00 is the quiet hour
        return w / 4, 0.0, 0.0, {}
    result = baseload(days_of(date(2025, 11, 3), 5, slot), BERLIN)
    assert result is not None and result.days == 5
    assert result.watts == pytest.approx(120.0)


def test_top_consumers_rank_devices_and_other() -> None:
    buckets = [HomeBucket(0, 4000.0, 0.0, 0.0, {"heatpump": 2500.0, "boiler": 1000.0},
                          has_grid=True)]
    top = top_consumers(buckets)
    assert [(c.device_id, round(c.kwh, 3)) for c in top] == [
        ("heatpump", 2.5), ("boiler", 1.0), ("other", 0.5)]
    assert top[0].share_pct == pytest.approx(62.5)


def test_a_day_far_above_its_weekdays_median_is_an_anomaly() -> None:
    first = date(2025, 10, 6)  # a Monday
    daily = {first + timedelta(days=k): 10.0 for k in range(35)}
    daily[first + timedelta(weeks=4)] = 16.5  # a Monday 4 weeks on
    daily[first + timedelta(weeks=4, days=1)] = 14.0  # x1.4: not far enough
    found = anomalies(daily)
    assert [(a.day, a.kwh, a.median_kwh, a.weeks) for a in found] == [
        (first + timedelta(weeks=4), 16.5, 10.0, 4)]


def test_daily_consumption_per_device() -> None:
    day = date(2025, 11, 3)
    buckets = [HomeBucket(at(day, 1), 500.0, 0.0, 0.0, {"boiler": 300.0}, has_grid=True)]
    assert daily_consumption(buckets, BERLIN, "boiler") == {day: pytest.approx(0.3)}


def test_home_buckets_combine_roles_without_double_counting_pv() -> None:
    meters = [MeterRole("gw", "grid", "d-grid", "grid"), MeterRole("gw", "pv", "d-pv", "pv"),
              MeterRole("gw", "wh", "d-boiler", "load")]
    rows = [("gw", "grid", "energy_import", 0, 100.0, 0),
            ("gw", "grid", "energy_export", 0, 50.0, 0),
            ("gw", "pv", "energy_production", 0, 300.0, 0),
            ("gw", "pv", "energy_export", 0, 300.0, 0),  # same energy, other register
            ("gw", "wh", "energy_import", 0, 80.0, 0),
            ("gw", "other", "energy_import", 0, 999.0, 0)]  # not in this home
    [b] = home_buckets(rows, meters)
    assert (b.grid_import_wh, b.grid_export_wh, b.pv_wh, b.loads) == (
        100.0, 50.0, 300.0, {"d-boiler": 80.0})
    assert b.consumption_wh == 350.0


# -- recommendations ----------------------------------------------------------------------------

HEATER = FlexibleLoad("d-boiler", "boiler-switch", "Water heater")


def test_shift_to_the_cheapest_hours_of_a_time_of_use_tariff() -> None:
    def slot(q: int) -> tuple[float, float, float, dict[str, float]]:
        boiler = 500.0 if 18 * 4 <= q < 19 * 4 else 0.0  # 2 kW from 18:00 to 19:00
        return 125.0 + boiler, 0.0, 0.0, {"d-boiler": boiler}
    rec = recommend(days_of(date(2025, 11, 3), 14, slot), HEATER, book(TOU), "EUR")
    assert rec is not None
    assert (rec.reason, rec.start, rec.end) == ("cheapest_hours", "00:00", "01:00")
    assert rec.kwh_per_day == pytest.approx(2.0)
    assert rec.power_w == pytest.approx(2000.0)
    # 10 weekdays at 0.40 and 4 weekend days at 0.30 now; always 0.20 at night
    assert rec.current_cost_per_day == pytest.approx((10 * 0.8 + 4 * 0.6) / 14)
    assert rec.new_cost_per_day == pytest.approx(0.40)
    assert rec.saving_per_month == pytest.approx(30 * ((10 * 0.8 + 4 * 0.6) / 14 - 0.4))
    assert "00:00-01:00" in rec.explanation()


def test_shift_to_pv_surplus_earns_the_import_price_minus_feed_in() -> None:
    def slot(q: int) -> tuple[float, float, float, dict[str, float]]:
        base, pv = 125.0, (750.0 if 11 * 4 <= q < 14 * 4 else 0.0)  # 3 kW PV 11-14
        boiler = 500.0 if 19 * 4 <= q < 20 * 4 else 0.0
        net = base + boiler - pv
        return max(net, 0.0), max(-net, 0.0), pv, {"d-boiler": boiler}
    rec = recommend(days_of(date(2025, 11, 3), 7, slot), HEATER, book(FIXED), "EUR")
    assert rec is not None
    assert (rec.reason, rec.start, rec.end) == ("pv_surplus", "11:00", "12:00")
    assert rec.current_cost_per_day == pytest.approx(2 * 0.30)
    assert rec.new_cost_per_day == pytest.approx(2 * 0.08)
    assert rec.saving_per_day == pytest.approx(0.44)
    assert rec.surplus_share_pct == pytest.approx(100.0)


def test_no_recommendation_when_moving_saves_nothing() -> None:
    def slot(q: int) -> tuple[float, float, float, dict[str, float]]:
        boiler = 500.0 if 18 * 4 <= q < 19 * 4 else 0.0
        return 125.0 + boiler, 0.0, 0.0, {"d-boiler": boiler}
    flat = {"import_pricing": {"kind": "fixed", "price": 0.3}}
    assert recommend(days_of(date(2025, 11, 3), 7, slot), HEATER, book(flat), "EUR") is None
