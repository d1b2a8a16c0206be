"""Costs per day, month and device from home buckets and a :class:`PriceBook`. Pure.

Per bucket: the grid import costs its import price, the export earns its feed-in price. The
energy the home consumed in a bucket has an *effective price*: grid energy at the import price
and self-consumed PV at the feed-in price it did not earn. A device's cost is its energy at its
buckets' effective prices, so the devices never add up to more than the home's consumption
cost. The standing charge is added per local day. Energy in a bucket with no price is counted
in ``unpriced_kwh`` instead of being costed at zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from cloud_sync.analytics import calendar
from cloud_sync.analytics.home import HomeBucket
from cloud_sync.analytics.tariffs import PriceBook


@dataclass
class CostLine:
    """Totals of one period (a day, a month, the whole range)."""

    import_kwh: float = 0.0
    export_kwh: float = 0.0
    consumption_kwh: float = 0.0
    import_cost: float = 0.0
    export_credit: float = 0.0
    standing_charge: float = 0.0
    unpriced_kwh: float = 0.0
    devices: dict[str, float] = field(default_factory=dict)  # device -> cost
    device_kwh: dict[str, float] = field(default_factory=dict)

    @property
    def net_cost(self) -> float:
        return self.import_cost - self.export_credit + self.standing_charge

    def add(self, other: CostLine) -> None:
        for name in ("import_kwh", "export_kwh", "consumption_kwh", "import_cost",
                     "export_credit", "standing_charge", "unpriced_kwh"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for device, cost in other.devices.items():
            self.devices[device] = self.devices.get(device, 0.0) + cost
        for device, kwh in other.device_kwh.items():
            self.device_kwh[device] = self.device_kwh.get(device, 0.0) + kwh

    def as_dict(self, digits: int = 4) -> dict[str, object]:
        return {
            "import_kwh": round(self.import_kwh, digits),
            "export_kwh": round(self.export_kwh, digits),
            "consumption_kwh": round(self.consumption_kwh, digits),
            "import_cost": round(self.import_cost, digits),
            "export_credit": round(self.export_credit, digits),
            "standing_charge": round(self.standing_charge, digits),
            "net_cost": round(self.net_cost, digits),
            "unpriced_kwh": round(self.unpriced_kwh, digits),
            "devices": {d: {"kwh": round(self.device_kwh.get(d, 0.0), digits),
                            "cost": round(c, digits)} for d, c in sorted(self.devices.items())},
        }


@dataclass
class CostReport:
    currency: str
    days: dict[str, CostLine]
    months: dict[str, CostLine]
    total: CostLine


def bucket_cost(bucket: HomeBucket, book: PriceBook) -> CostLine:
    """The cost line of one bucket (no standing charge)."""
    line = CostLine(import_kwh=bucket.grid_import_wh / 1000, export_kwh=bucket.grid_export_wh
                    / 1000, consumption_kwh=bucket.consumption_wh / 1000)
    p_imp = book.import_price(bucket.start_ms)
    p_exp = book.export_price(bucket.start_ms)
    if p_imp is None:
        line.unpriced_kwh = line.import_kwh + line.export_kwh
        return line
    line.import_cost = line.import_kwh * p_imp
    line.export_credit = line.export_kwh * (p_exp or 0.0)
    effective = effective_price(bucket, p_imp, p_exp or 0.0)
    for device, wh in bucket.loads.items():
        line.device_kwh[device] = wh / 1000
        line.devices[device] = wh / 1000 * effective
    return line


def effective_price(bucket: HomeBucket, import_price: float, export_price: float) -> float:
    """Price of one kWh the home consumed in ``bucket`` (grid and own PV blended)."""
    consumed = bucket.consumption_wh
    if consumed <= 0.0:
        return import_price
    from_grid = max(0.0, consumed - bucket.self_consumed_wh)
    return (from_grid * import_price + bucket.self_consumed_wh * export_price) / consumed


def cost_report(buckets: Sequence[HomeBucket], book: PriceBook, lo_ms: int, hi_ms: int,
                ) -> CostReport:
    """Costs of ``[lo_ms, hi_ms)`` by local day and month (standing charge on every day of
    the range whose tariff has one)."""
    tz = book.tz
    days: dict[str, CostLine] = defaultdict(CostLine)
    for bucket in buckets:
        if lo_ms <= bucket.start_ms < hi_ms:
            days[str(calendar.day_of(bucket.start_ms, tz))].add(bucket_cost(bucket, book))
    for day in calendar.days_between(lo_ms, hi_ms, tz):
        start, _end = calendar.day_bounds(day, tz)
        tariff = book.tariff_at(max(start, lo_ms))
        if tariff is not None and tariff.standing_charge_per_day:
            days[str(day)].standing_charge += tariff.standing_charge_per_day
    months: dict[str, CostLine] = defaultdict(CostLine)
    total = CostLine()
    for day_name, line in sorted(days.items()):
        months[day_name[:7]].add(line)
        total.add(line)
    tariff = book.tariff_at(lo_ms) or book.tariff_at(hi_ms - 1)
    return CostReport(tariff.currency if tariff else "EUR", dict(sorted(days.items())),
                      dict(sorted(months.items())), total)
