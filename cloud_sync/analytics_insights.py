"""``GET /api/v1/homes/{id}/insights``: what the home's own data says, with the numbers.

Self-sufficiency and self-consumption, the standby baseload (and what it costs a year),
the top consumers, anomalous days (home and devices, against the same weekday's median of the
4 weeks before) and the load-shift recommendations of its flexible loads.
"""

from __future__ import annotations

import statistics
from typing import Any
from zoneinfo import ZoneInfo

from cloud_sync.analytics import calendar
from cloud_sync.analytics.insights import (
    anomalies,
    baseload,
    daily_consumption,
    shares,
    top_consumers,
)
from cloud_sync.analytics.recommend import Recommendation, recommend
from cloud_sync.analytics_context import AnalyticsApiContext, buckets_for, price_book
from cloud_sync.ports import Home

_DAY_MS = 86_400_000


def recommendations_for(ctx: AnalyticsApiContext, home: Home, lo: int, hi: int,
                        ) -> list[Recommendation]:
    loads = ctx.store.flexible_loads(home.id)
    if not loads:
        return []
    buckets, _meters = buckets_for(ctx, home, "15m", lo, hi)
    book = price_book(ctx, home, lo, hi)
    tariff = book.tariff_at(hi - 1)
    if tariff is None:
        return []
    found = [recommend(buckets, load, book, tariff.currency) for load in loads]
    return sorted((r for r in found if r is not None), key=lambda r: -r.saving_per_day)


def _recommendation_json(rec: Recommendation, accepted: bool) -> dict[str, Any]:
    return {"id": rec.id, "kind": "shift_load", "reason": rec.reason, "label": rec.label,
            "device_id": rec.device_id, "actuator_device_id": rec.actuator_device_id,
            "window": {"start": rec.start, "end": rec.end},
            "kwh_per_day": round(rec.kwh_per_day, 3),
            "power_w": round(rec.power_w), "days_analysed": rec.days_analysed,
            "current_cost_per_day": round(rec.current_cost_per_day, 4),
            "new_cost_per_day": round(rec.new_cost_per_day, 4),
            "saving_per_day": round(rec.saving_per_day, 4),
            "saving_per_month": round(rec.saving_per_month, 2),
            "current_avg_price": round(rec.current_avg_price, 4),
            "window_avg_price": round(rec.window_avg_price, 4),
            "surplus_share_pct": round(rec.surplus_share_pct, 1), "currency": rec.currency,
            "explanation": rec.explanation(), "accepted": accepted}


def insights_json(ctx: AnalyticsApiContext, home: Home, lo: int, hi: int) -> dict[str, Any]:
    tz = ZoneInfo(home.timezone)
    buckets, meters = buckets_for(ctx, home, "15m", lo, hi)
    s = shares(buckets)
    base = baseload(buckets, tz)
    book = price_book(ctx, home, lo, hi)
    prices = [p for b in buckets if (p := book.import_price(b.start_ms)) is not None]
    avg_price = statistics.mean(prices) if prices else None
    history, _m = buckets_for(ctx, home, "day", lo - 28 * _DAY_MS, hi)
    found = anomalies(daily_consumption(history, tz))
    for m in meters:
        if m.role == "load":
            found += anomalies(daily_consumption(history, tz, m.device_id), m.device_id)
    active = {(s_.device_id, s_.on_at, s_.off_at) for s_ in ctx.store.schedules(home.id)
              if s_.active}
    recs = recommendations_for(ctx, home, lo, hi)
    return {
        "home_id": home.id, "from": calendar.iso_local(lo, tz), "to": calendar.iso_local(hi, tz),
        "consumption_kwh": round(s.consumption_kwh, 3), "pv_kwh": round(s.pv_kwh, 3),
        "self_consumed_kwh": round(s.self_consumed_kwh, 3),
        "self_sufficiency_pct": None if s.self_sufficiency_pct is None
        else round(s.self_sufficiency_pct, 1),
        "self_consumption_pct": None if s.self_consumption_pct is None
        else round(s.self_consumption_pct, 1),
        "baseload": None if base is None else {
            "watts": round(base.watts, 1), "days": base.days,
            "kwh_per_year": round(base.watts * 8.76, 1),
            "cost_per_year": None if avg_price is None else round(base.watts * 8.76 * avg_price,
                                                                    2)},
        "top_consumers": [{"device_id": c.device_id, "kwh": round(c.kwh, 3),
                           "share_pct": None if c.share_pct is None else round(c.share_pct, 1)}
                          for c in top_consumers(buckets)],
        "anomalies": [{"day": str(a.day), "subject": a.subject, "kwh": round(a.kwh, 3),
                       "median_kwh": round(a.median_kwh, 3), "weeks": a.weeks,
                       "ratio": round(a.ratio, 2)}
                      for a in sorted(found, key=lambda a: a.day)
                      if lo <= calendar.day_start(a.day, tz) < hi],
        "recommendations": [_recommendation_json(
            r, (r.actuator_device_id, r.start, r.end) in active) for r in recs],
    }
