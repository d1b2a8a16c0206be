"""Recommendations: when should a flexible load (water heater, heat pump, EV) run? Pure.

From the home's own 15-minute data and tariff, for each flexible device:

1. Its energy per day and its power (the 90th percentile of its active quarter hours).
2. The daily window it needs at that power (enough for 9 days in 10), tried at every quarter
   hour of the local day.
3. The cost of a kWh in each quarter hour is *marginal*: the home's net draw without the
   device decides whether one more kWh is bought (import price) or taken from PV surplus that
   would have been fed in (feed-in price). Each past day is replayed with the device's energy
   moved into the window, at that day's prices.
4. The window with the lowest mean cost wins (the earliest on a tie). Its saving against what
   the device really cost is the estimate; it is labelled ``pv_surplus`` when most of the moved
   energy lands in surplus, else ``cheapest_hours``.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from cloud_sync.analytics import calendar
from cloud_sync.analytics.home import HomeBucket
from cloud_sync.analytics.tariffs import PriceBook

SLOTS = 96  # quarter hours of a local day


@dataclass(frozen=True)
class FlexibleLoad:
    meter_device_id: str  # the load meter that measures it
    actuator_device_id: str  # the switch that controls it
    label: str


@dataclass
class _Day:
    device: list[float]  # kWh per slot
    base_net: list[float]  # the home's net kWh per slot without the device (+ import)
    imp: list[float]
    exp: list[float]


@dataclass(frozen=True)
class Recommendation:
    id: str
    device_id: str
    actuator_device_id: str
    label: str
    reason: str  # cheapest_hours | pv_surplus
    start: str  # local HH:MM
    end: str
    kwh_per_day: float
    power_w: float
    days_analysed: int
    current_cost_per_day: float
    new_cost_per_day: float
    current_avg_price: float
    window_avg_price: float
    surplus_share_pct: float
    currency: str

    @property
    def saving_per_day(self) -> float:
        return self.current_cost_per_day - self.new_cost_per_day

    @property
    def saving_per_month(self) -> float:
        return 30 * self.saving_per_day

    def explanation(self) -> str:
        where = "on your PV surplus" if self.reason == "pv_surplus" else "in the cheapest hours"
        return (f"{self.label} uses {self.kwh_per_day:.1f} kWh a day at an average "
                f"{self.current_avg_price:.3f} {self.currency}/kWh. Running it "
                f"{self.start}-{self.end} ({where}, {self.window_avg_price:.3f} "
                f"{self.currency}/kWh) would save about {self.saving_per_day:.2f} "
                f"{self.currency} a day ({self.saving_per_month:.2f} a month), from "
                f"{self.days_analysed} days of your data.")


def _cost(net: float, imp: float, exp: float) -> float:
    return net * imp if net > 0 else net * exp


def _slot(ts_ms: int, tz: ZoneInfo) -> int:
    moment = calendar.local(ts_ms, tz)
    return (moment.hour * 60 + moment.minute) // 15


def _days(buckets: Sequence[HomeBucket], device: str, book: PriceBook) -> list[_Day]:
    tz = book.tz
    raw: dict[date, _Day] = {}
    count: dict[date, int] = defaultdict(int)
    for b in buckets:
        imp, exp = book.import_price(b.start_ms), book.export_price(b.start_ms)
        if imp is None:
            continue
        day = calendar.day_of(b.start_ms, tz)
        d = raw.setdefault(day, _Day([0.0] * SLOTS, [0.0] * SLOTS, [imp] * SLOTS,
                                     [exp or 0.0] * SLOTS))
        s = _slot(b.start_ms, tz)
        dev = b.loads.get(device, 0.0) / 1000
        net = (b.net_wh if b.has_grid else b.consumption_wh) / 1000
        d.device[s] += dev
        d.base_net[s] += net - dev
        d.imp[s], d.exp[s] = imp, exp or 0.0
        count[day] += 1
    return [raw[d] for d in sorted(raw) if count[d] >= 92]  # whole days only


def _place(day: _Day, start: int, slots: int, per_slot: float) -> list[float]:
    """The day's device energy moved into ``slots`` quarter hours from ``start`` (wrapping)."""
    energy = sum(day.device)
    moved = [0.0] * SLOTS
    n_full = min(int(energy // per_slot), slots) if per_slot > 0 else 0
    for k in range(n_full):
        moved[(start + k) % SLOTS] = per_slot
    leftover = energy - n_full * per_slot
    if leftover > 1e-12:
        if n_full < slots:
            moved[(start + n_full) % SLOTS] += leftover
        else:  # more than the window holds at that power: spread the excess evenly
            for k in range(slots):
                moved[(start + k) % SLOTS] += leftover / slots
    return moved


def _device_cost(day: _Day, device: list[float]) -> float:
    """What the device's energy added to the day's bill (only its own slots change)."""
    return sum(_cost(day.base_net[s] + device[s], day.imp[s], day.exp[s])
               - _cost(day.base_net[s], day.imp[s], day.exp[s])
               for s in range(SLOTS) if device[s])


def _hhmm(slot: int) -> str:
    slot %= SLOTS
    return f"{slot // 4:02d}:{slot % 4 * 15:02d}"


def recommend(buckets: Sequence[HomeBucket], load: FlexibleLoad, book: PriceBook,
              currency: str, min_saving_per_day: float = 0.01) -> Recommendation | None:
    """The best daily window for ``load``, or ``None`` when moving it saves too little."""
    days = _days(buckets, load.meter_device_id, book)
    per_day = [sum(d.device) for d in days]
    if not days or statistics.mean(per_day) < 0.1:
        return None
    active = sorted(e for d in days for e in d.device if e > 0.05 * max(d.device))
    per_slot = active[min(len(active) - 1, int(0.9 * len(active)))]
    need = sorted(per_day)[min(len(per_day) - 1, int(0.9 * len(per_day)))]
    slots = max(1, min(SLOTS, math.ceil(need / per_slot - 1e-9)))
    current = statistics.mean(_device_cost(d, d.device) for d in days)
    best: tuple[float, int] | None = None
    for start in range(SLOTS):
        cost = statistics.mean(_device_cost(d, _place(d, start, slots, per_slot)) for d in days)
        if best is None or cost < best[0] - 1e-9:
            best = (cost, start)
    assert best is not None
    new_cost, start = best
    if current - new_cost < min_saving_per_day:
        return None
    return _build(load, days, start, slots, per_slot, current=current, new_cost=new_cost,
                  currency=currency)


def _build(load: FlexibleLoad, days: list[_Day], start: int, slots: int, per_slot: float, *,
           current: float, new_cost: float, currency: str) -> Recommendation:
    kwh = statistics.mean(sum(d.device) for d in days)
    moved = [_place(d, start, slots, per_slot) for d in days]
    surplus = statistics.mean(
        sum(min(m[s], max(0.0, -d.base_net[s])) for s in range(SLOTS))
        for d, m in zip(days, moved, strict=True))
    window = [(start + k) % SLOTS for k in range(slots)]
    window_price = statistics.mean(d.imp[s] for d in days for s in window)
    ident = hashlib.sha256(f"{load.meter_device_id}|{start}|{slots}".encode()).hexdigest()[:16]
    return Recommendation(
        id=ident, device_id=load.meter_device_id, actuator_device_id=load.actuator_device_id,
        label=load.label, reason="pv_surplus" if surplus >= 0.5 * kwh else "cheapest_hours",
        start=_hhmm(start), end=_hhmm(start + slots), kwh_per_day=kwh,
        power_w=per_slot * 4000, days_analysed=len(days), current_cost_per_day=current,
        new_cost_per_day=new_cost, current_avg_price=current / kwh if kwh else 0.0,
        window_avg_price=window_price, surplus_share_pct=100 * surplus / kwh if kwh else 0.0,
        currency=currency)
