"""Insights from a home's buckets: self-sufficiency, self-consumption, baseload, top
consumers and anomalous days. Pure; every figure comes with the numbers it was computed from.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from cloud_sync.analytics import calendar
from cloud_sync.analytics.home import HomeBucket


@dataclass(frozen=True)
class Shares:
    consumption_kwh: float
    pv_kwh: float
    self_consumed_kwh: float
    import_kwh: float
    export_kwh: float

    @property
    def self_sufficiency_pct(self) -> float | None:
        """Share of the consumption covered by own PV."""
        if self.consumption_kwh <= 0:
            return None
        return 100.0 * self.self_consumed_kwh / self.consumption_kwh

    @property
    def self_consumption_pct(self) -> float | None:
        """Share of the PV production used in the home."""
        return 100.0 * self.self_consumed_kwh / self.pv_kwh if self.pv_kwh > 0 else None


def shares(buckets: Sequence[HomeBucket]) -> Shares:
    """Summed per bucket, so PV exported at noon never offsets grid energy bought at night."""
    return Shares(
        consumption_kwh=sum(b.consumption_wh for b in buckets) / 1000,
        pv_kwh=sum(b.pv_wh for b in buckets) / 1000,
        self_consumed_kwh=sum(b.self_consumed_wh for b in buckets) / 1000,
        import_kwh=sum(b.grid_import_wh for b in buckets) / 1000,
        export_kwh=sum(b.grid_export_wh for b in buckets) / 1000,
    )


def hourly_consumption(buckets: Sequence[HomeBucket], tz: ZoneInfo) -> dict[int, float]:
    """Local hour start -> consumption Wh (whole hours only: all four quarters present)."""
    wh: dict[int, float] = defaultdict(float)
    quarters: dict[int, int] = defaultdict(int)
    for b in buckets:
        hour = calendar.hour_start(b.start_ms, tz)
        wh[hour] += b.consumption_wh
        quarters[hour] += 1
    return {h: v for h, v in wh.items() if quarters[h] >= 4}


@dataclass(frozen=True)
class Baseload:
    watts: float
    days: int  # days it was estimated from
    daily_minima_w: list[float]


def baseload(buckets: Sequence[HomeBucket], tz: ZoneInfo) -> Baseload | None:
    """Standby estimate: the median over days of each day's lowest hourly mean power.

    An hour's Wh is its mean W; the quietest hour of a day is what stays on when nobody uses
    anything; the median over days ignores the odd day with a fridge defrosting all night.
    """
    per_day: dict[date, list[float]] = defaultdict(list)
    for hour, wh in hourly_consumption(buckets, tz).items():
        per_day[calendar.day_of(hour, tz)].append(wh)
    minima = [min(v) for _d, v in sorted(per_day.items()) if len(v) >= 20]
    if not minima:
        return None
    return Baseload(statistics.median(minima), len(minima), minima)


@dataclass(frozen=True)
class Consumer:
    device_id: str
    kwh: float
    share_pct: float | None


def top_consumers(buckets: Sequence[HomeBucket], limit: int = 5) -> list[Consumer]:
    """Metered devices by energy, and ``other`` (consumption no device meter explains)."""
    total = sum(b.consumption_wh for b in buckets) / 1000
    per: dict[str, float] = defaultdict(float)
    for b in buckets:
        for device, wh in b.loads.items():
            per[device] += wh / 1000
    other = total - sum(per.values())
    if other > 0.001 and per:
        per["other"] = other
    ranked = sorted(per.items(), key=lambda kv: -kv[1])[:limit]
    return [Consumer(d, kwh, 100.0 * kwh / total if total > 0 else None) for d, kwh in ranked]


def daily_consumption(buckets: Sequence[HomeBucket], tz: ZoneInfo,
                      device: str | None = None) -> dict[date, float]:
    """Local day -> kWh (the home's, or one device's)."""
    out: dict[date, float] = defaultdict(float)
    for b in buckets:
        wh = b.consumption_wh if device is None else b.loads.get(device, 0.0)
        out[calendar.day_of(b.start_ms, tz)] += wh / 1000
    return dict(out)


@dataclass(frozen=True)
class Anomaly:
    day: date
    subject: str  # "home" or a device id
    kwh: float
    median_kwh: float  # of the same weekday in the weeks before
    weeks: int

    @property
    def ratio(self) -> float:
        return self.kwh / self.median_kwh if self.median_kwh > 0 else float("inf")


def anomalies(daily: dict[date, float], subject: str = "home", *, weeks: int = 4,
              factor: float = 1.5, min_excess_kwh: float = 1.0, min_weeks: int = 3,
              ) -> list[Anomaly]:
    """Days far above the median of the same weekday in the ``weeks`` before them.

    Far means above ``factor`` times that median and at least ``min_excess_kwh`` more (so a
    tiny load doubling is no news); at least ``min_weeks`` earlier same weekdays are needed.
    """
    found: list[Anomaly] = []
    for day in sorted(daily):
        before = [daily[d] for d in (day - timedelta(weeks=k) for k in range(1, weeks + 1))
                  if d in daily]
        if len(before) < min_weeks:
            continue
        median = statistics.median(before)
        value = daily[day]
        if value > factor * median and value - median >= min_excess_kwh:
            found.append(Anomaly(day, subject, value, median, len(before)))
    return found
