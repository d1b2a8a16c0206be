"""Tariffs: what a kWh costs (import) and earns (feed-in) at any moment. Pure.

Kinds of import pricing: ``fixed`` (one price), ``tou`` (time-of-use windows in the home's
local time, by weekday, first match wins, else the default price) and ``dynamic`` (a price
series posted via the API or CSV, plus a fixed ``surcharge`` for fees and taxes; a missing
interval uses ``fallback_price`` or stays unpriced, never silently zero). Feed-in is a fixed
price per kWh or the posted series' export price. Prices are in ``currency`` per kWh.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_sync.analytics import calendar
from cloud_sync.errors import CloudSyncError

Price = Annotated[float, Field(ge=0, le=100)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HHMM = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")]


class TariffError(CloudSyncError):
    """A tariff, price series or CSV is invalid; the message names the field and the fix."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Model):
    """``start`` to ``end`` local time (``end`` <= ``start`` wraps past midnight)."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: HHMM
    end: HHMM
    price: Price

    def covers(self, moment: datetime) -> bool:
        minute = moment.hour * 60 + moment.minute
        lo, hi = _minutes(self.start), _minutes(self.end)
        day = WEEKDAYS[moment.weekday()]
        if lo < hi:
            return day in self.days and lo <= minute < hi
        # past midnight: the early part belongs to the window that started the day before
        yesterday = WEEKDAYS[(moment.weekday() - 1) % 7]
        return (day in self.days and minute >= lo) or (yesterday in self.days and minute < hi)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Fixed(_Model):
    kind: Literal["fixed"]
    price: Price


class TimeOfUse(_Model):
    kind: Literal["tou"]
    default_price: Price
    windows: list[Window] = Field(min_length=1)


class Dynamic(_Model):
    kind: Literal["dynamic"]
    surcharge: Annotated[float, Field(ge=-10, le=100)] = 0.0
    fallback_price: Price | None = None


class FeedIn(_Model):
    kind: Literal["fixed", "dynamic"] = "fixed"
    price: Price = 0.0  # fixed price; for "dynamic", used where the series has no export price


class Tariff(_Model):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    import_pricing: Fixed | TimeOfUse | Dynamic = Field(discriminator="kind")
    feed_in: FeedIn = Field(default_factory=FeedIn)
    standing_charge_per_day: Annotated[float, Field(ge=0, le=1000)] = 0.0


def parse_tariff(body: object) -> Tariff:
    """Validate a tariff document; raises :class:`TariffError` naming the first bad field."""
    try:
        return Tariff.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "tariff"
        raise TariffError(f"{where}: {first['msg']}") from exc


@dataclass(frozen=True)
class PricePoint:
    """One posted interval of a dynamic price series (UTC epoch ms, price per kWh)."""

    start_ms: int
    end_ms: int
    import_price: float
    export_price: float | None = None


class PriceBook:
    """Prices in effect over time: tariffs with their start times, and the posted series."""

    def __init__(self, tariffs: Sequence[tuple[int, Tariff]], points: Sequence[PricePoint],
                 tz: ZoneInfo) -> None:
        self._tariffs = sorted(tariffs, key=lambda t: t[0])
        self._starts = [t[0] for t in self._tariffs]
        self._points = sorted(points, key=lambda p: p.start_ms)
        self._point_starts = [p.start_ms for p in self._points]
        self.tz = tz

    def tariff_at(self, ts_ms: int) -> Tariff | None:
        i = bisect.bisect_right(self._starts, ts_ms) - 1
        return self._tariffs[i][1] if i >= 0 else None

    def _point(self, ts_ms: int) -> PricePoint | None:
        i = bisect.bisect_right(self._point_starts, ts_ms) - 1
        if i >= 0 and ts_ms < self._points[i].end_ms:
            return self._points[i]
        return None

    def import_price(self, ts_ms: int) -> float | None:
        tariff = self.tariff_at(ts_ms)
        if tariff is None:
            return None
        pricing = tariff.import_pricing
        if isinstance(pricing, Fixed):
            return pricing.price
        if isinstance(pricing, TimeOfUse):
            moment = calendar.local(ts_ms, self.tz)
            return next((w.price for w in pricing.windows if w.covers(moment)),
                        pricing.default_price)
        point = self._point(ts_ms)
        if point is not None:
            return point.import_price + pricing.surcharge
        return pricing.fallback_price

    def export_price(self, ts_ms: int) -> float | None:
        tariff = self.tariff_at(ts_ms)
        if tariff is None:
            return None
        if tariff.feed_in.kind == "dynamic":
            point = self._point(ts_ms)
            if point is not None and point.export_price is not None:
                return point.export_price
        return tariff.feed_in.price


def parse_price_csv(text: str, max_rows: int = 100_000) -> list[PricePoint]:
    """``start,end,import_price[,export_price]`` with ISO 8601 times that carry an offset
    (``2025-10-26T01:00:00+01:00`` or ``...Z``). Raises :class:`TariffError` naming the line."""
    reader = csv.reader(io.StringIO(text))
    points: list[PricePoint] = []
    for number, row in enumerate(reader, start=1):
        if not row or (number == 1 and row[0].strip().lower() == "start"):
            continue
        if len(points) >= max_rows:
            raise TariffError(f"line {number}: more than {max_rows} rows; post them in parts")
        points.append(_csv_point(number, row))
    check_points(points)
    return points


def _csv_point(number: int, row: list[str]) -> PricePoint:
    if len(row) not in (3, 4):
        raise TariffError(f"line {number}: expected start,end,import_price[,export_price]")
    try:
        start, end = (datetime.fromisoformat(v.strip().replace("Z", "+00:00")) for v in row[:2])
        prices = [float(v) for v in row[2:] if v.strip()]
    except ValueError as exc:
        raise TariffError(f"line {number}: {exc} (times like 2025-10-26T01:00:00+01:00, "
                          "prices as decimals like 0.2315)") from exc
    if start.tzinfo is None or end.tzinfo is None:
        raise TariffError(f"line {number}: times need an offset (+01:00 or Z)")
    return PricePoint(calendar.to_ms(start), calendar.to_ms(end), prices[0],
                      prices[1] if len(prices) > 1 else None)


def check_points(points: Sequence[PricePoint]) -> None:
    """Intervals must be 15-minute aligned, non-empty, non-overlapping, prices sane."""
    ordered = sorted(points, key=lambda p: p.start_ms)
    for i, p in enumerate(ordered):
        where = f"prices[{i}] ({calendar.iso_utc(p.start_ms)})"
        if p.end_ms <= p.start_ms:
            raise TariffError(f"{where}: end must be after start")
        if p.start_ms % 900_000 or p.end_ms % 900_000:
            raise TariffError(f"{where}: start and end must fall on quarter hours")
        if not -10 <= p.import_price <= 100 or (
                p.export_price is not None and not -10 <= p.export_price <= 100):
            raise TariffError(f"{where}: prices are per kWh, between -10 and 100")
        if i and ordered[i - 1].end_ms > p.start_ms:
            raise TariffError(f"{where}: overlaps the interval before it")

