"""What the analytics routes share: their context and a home's buckets and prices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from cloud_sync.analytics.home import HomeBucket, MeterRole, home_buckets
from cloud_sync.analytics.report import by_month
from cloud_sync.analytics.tariffs import PriceBook
from cloud_sync.db.analytics_queries import SqlAnalyticsStore
from cloud_sync.ports import Device, Home, StoredReading


class HomeDevices(Protocol):
    def devices(self, *, home_id: str) -> list[Device]: ...


@dataclass
class AnalyticsApiContext:
    store: SqlAnalyticsStore
    registry: HomeDevices
    latest: Callable[[str], list[StoredReading]]  # newest reading per channel of a gateway
    now_ms: Callable[[], int]
    wake_schedules: Callable[[], None] = lambda: None
    live_stale_ms: int = 300_000


def meters_of(devices: list[Device]) -> list[MeterRole]:
    return [MeterRole(d.gateway_id, d.local_id, d.id, d.role, d.name or d.local_id)  # type: ignore[arg-type]
            for d in devices if d.kind == "meter" and d.role in ("grid", "pv", "load")]


def buckets_for(ctx: AnalyticsApiContext, home: Home, resolution: str, lo: int, hi: int,
                ) -> tuple[list[HomeBucket], list[MeterRole]]:
    meters = meters_of(ctx.registry.devices(home_id=home.id))
    table = "day" if resolution == "month" else resolution
    rows = ctx.store.rollup_rows([(m.gateway_id, m.meter_id) for m in meters], table,  # type: ignore[arg-type]
                                 lo, hi)
    buckets = home_buckets(rows, meters)
    if resolution == "month":
        buckets = by_month(buckets, ZoneInfo(home.timezone))
    return buckets, meters


def price_book(ctx: AnalyticsApiContext, home: Home, lo: int, hi: int) -> PriceBook:
    return PriceBook(ctx.store.tariffs(home.id), ctx.store.prices(home.id, lo, hi),
                     ZoneInfo(home.timezone))
