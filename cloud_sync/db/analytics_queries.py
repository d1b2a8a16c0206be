"""``SqlAnalyticsStore``: what the analytics API reads and writes besides the rollup job.

Rollup rows of a home's meters at a resolution, tariffs (a history: each applies from its
``valid_from``), posted dynamic prices, flexible loads and accepted schedules. Every call goes
through the shared database breaker and raises ``StorageUnavailable`` on database trouble.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from cloud_sync.analytics.home import Row
from cloud_sync.analytics.recommend import FlexibleLoad
from cloud_sync.analytics.tariffs import PricePoint, Tariff, parse_tariff
from cloud_sync.db.guarded import GuardedStore
from cloud_sync.db.schema_analytics import (
    energy_15m,
    energy_daily,
    energy_hourly,
    flexible_loads,
    prices,
    schedules,
    tariffs,
)

T = TypeVar("T")
Resolution = Literal["15m", "hour", "day"]
_TABLES = {"15m": energy_15m, "hour": energy_hourly}


@dataclass(frozen=True)
class Schedule:
    """An accepted recommendation: switch ``device_id`` on at ``on_at`` and off at ``off_at``
    (local time) every day; ``next_run_ms`` is the next switch time."""

    id: str
    home_id: str
    device_id: str
    on_at: str
    off_at: str
    recommendation: dict[str, Any]
    created_at: int
    next_run_ms: int
    active: bool


def _schedule(row: sa.Row[Any]) -> Schedule:
    m = row._mapping
    return Schedule(str(m["id"]), str(m["home_id"]), str(m["device_id"]), str(m["on_at"]),
                    str(m["off_at"]), json.loads(m["recommendation"]), int(m["created_at"]),
                    int(m["next_run_ms"]), bool(m["active"]))


class SqlAnalyticsStore(GuardedStore):
    # -- rollups ---------------------------------------------------------------------------

    def rollup_rows(self, meters: Sequence[tuple[str, str]], resolution: Resolution,
                    lo_ms: int, hi_ms: int) -> list[Row]:
        """``(gateway, meter, channel, bucket start, wh, flags)`` of ``meters`` (gateway,
        meter id pairs) for buckets starting in ``[lo_ms, hi_ms)``."""
        if not meters:
            return []
        if resolution == "day":
            c = energy_daily.c
            start: Any = c.start_ms
            table = energy_daily
        else:
            table = _TABLES[resolution]
            c = table.c
            start = c.bucket_ms
        pairs = sa.tuple_(c.gateway_id, c.meter_id).in_([tuple(m) for m in meters])
        stmt = (sa.select(c.gateway_id, c.meter_id, c.channel, start, c.wh, c.flags)
                .where(pairs, start >= lo_ms, start < hi_ms).order_by(start))
        return self._read(lambda conn: [
            (str(g), str(m), str(ch), int(s), float(w), int(f))
            for g, m, ch, s, w, f in conn.execute(stmt)])

    # -- tariffs and prices --------------------------------------------------------------------

    def set_tariff(self, home_id: str, valid_from_ms: int, tariff: Tariff) -> None:
        body = tariff.model_dump_json()

        def run(conn: sa.Connection) -> None:
            t = tariffs.c
            conn.execute(tariffs.delete().where(t.home_id == home_id,
                                                t.valid_from_ms == valid_from_ms))
            conn.execute(tariffs.insert().values(home_id=home_id, valid_from_ms=valid_from_ms,
                                                 body=body))
        self._write(run)

    def tariffs(self, home_id: str) -> list[tuple[int, Tariff]]:
        t = tariffs.c
        stmt = sa.select(t.valid_from_ms, t.body).where(t.home_id == home_id).order_by(
            t.valid_from_ms)
        return self._read(lambda conn: [(int(v), parse_tariff(json.loads(b)))
                                        for v, b in conn.execute(stmt)])

    def put_prices(self, home_id: str, points: Sequence[PricePoint]) -> int:
        """Replace the posted prices over the span the new points cover."""
        if not points:
            return 0
        lo, hi = min(p.start_ms for p in points), max(p.end_ms for p in points)

        def run(conn: sa.Connection) -> int:
            c = prices.c
            conn.execute(prices.delete().where(c.home_id == home_id, c.start_ms < hi,
                                               c.end_ms > lo))
            conn.execute(prices.insert(), [
                {"home_id": home_id, "start_ms": p.start_ms, "end_ms": p.end_ms,
                 "import_price": p.import_price, "export_price": p.export_price}
                for p in points])
            return len(points)
        return self._write(run)

    def prices(self, home_id: str, lo_ms: int, hi_ms: int) -> list[PricePoint]:
        c = prices.c
        stmt = (sa.select(c.start_ms, c.end_ms, c.import_price, c.export_price)
                .where(c.home_id == home_id, c.end_ms > lo_ms, c.start_ms < hi_ms)
                .order_by(c.start_ms))
        return self._read(lambda conn: [
            PricePoint(int(a), int(b), float(i), None if e is None else float(e))
            for a, b, i, e in conn.execute(stmt)])

    # -- flexible loads and schedules ------------------------------------------------------------

    def set_flexible_loads(self, home_id: str, loads: Sequence[FlexibleLoad]) -> None:
        def run(conn: sa.Connection) -> None:
            conn.execute(flexible_loads.delete().where(flexible_loads.c.home_id == home_id))
            if loads:
                conn.execute(flexible_loads.insert(), [
                    {"home_id": home_id, "meter_device_id": f.meter_device_id,
                     "actuator_device_id": f.actuator_device_id, "label": f.label}
                    for f in loads])
        self._write(run)

    def flexible_loads(self, home_id: str) -> list[FlexibleLoad]:
        c = flexible_loads.c
        stmt = sa.select(c.meter_device_id, c.actuator_device_id, c.label).where(
            c.home_id == home_id).order_by(c.label)
        return self._read(lambda conn: [FlexibleLoad(str(m), str(a), str(lbl))
                                        for m, a, lbl in conn.execute(stmt)])

    def create_schedule(self, home_id: str, device_id: str, *, on_at: str, off_at: str,
                        recommendation: dict[str, Any], now_ms: int, next_run_ms: int
                        ) -> Schedule:
        """One active schedule per device: accepting again replaces the old one."""
        schedule = Schedule(secrets.token_hex(8), home_id, device_id, on_at, off_at,
                            recommendation, now_ms, next_run_ms, active=True)
        row = {**schedule.__dict__, "recommendation": json.dumps(recommendation)}

        def run(conn: sa.Connection) -> None:
            c = schedules.c
            conn.execute(schedules.update().where(c.home_id == home_id, c.device_id == device_id,
                                                  c.active.is_(True)).values(active=False))
            conn.execute(schedules.insert().values(**row))
        self._write(run)
        return schedule

    def schedules(self, home_id: str) -> list[Schedule]:
        stmt = (sa.select(schedules).where(schedules.c.home_id == home_id)
                .order_by(schedules.c.created_at))
        return self._read(lambda conn: [_schedule(r) for r in conn.execute(stmt)])

    def deactivate_schedule(self, home_id: str, schedule_id: str) -> bool:
        c = schedules.c
        return self._write(lambda conn: conn.execute(schedules.update().where(
            c.home_id == home_id, c.id == schedule_id, c.active.is_(True)).values(
            active=False)).rowcount == 1)

    def run_due_schedules(self, now_ms: int, limit: int,
                          fire: Callable[[Schedule], int | None]) -> int:
        """Claim due schedules (SKIP LOCKED: one replica each), ``fire`` each one and store
        the next run it returns (``None``: try again next round). Returns how many fired."""
        c = schedules.c
        due = (sa.select(schedules).where(c.active.is_(True), c.next_run_ms <= now_ms)
               .order_by(c.next_run_ms).limit(limit).with_for_update(skip_locked=True))

        def run(conn: sa.Connection) -> int:
            fired = 0
            for row in conn.execute(due).all():
                schedule = _schedule(row)
                following = fire(schedule)
                if following is not None:
                    conn.execute(schedules.update().where(c.id == schedule.id).values(
                        next_run_ms=following))
                    fired += 1
            return fired
        return self._write(run)
