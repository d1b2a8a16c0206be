"""Rewrite one series' 15-minute buckets over a range, and the local hours and days over it.

Rows in the range are deleted and written again in the caller's transaction, so a recompute
is an idempotent replace. Hours and days at the edges of the range also hold 15-minute rows
outside it; those are read back (at most a day each side), so hourly and daily rows are always
the exact sum of their 15-minute rows.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cloud_sync.analytics import calendar
from cloud_sync.analytics.rollup import QUARTER_MS, Bucket
from cloud_sync.db.schema_analytics import energy_15m, energy_daily, energy_hourly

_CHUNK = 5000
_COPY_FROM = 2000  # on PostgreSQL, more rows than this go in with COPY (a rebuild's year)
K = TypeVar("K", bound=Hashable)


def hour_end(start: int, tz: ZoneInfo) -> int:
    """End of the local hour that starts at ``start``."""
    ts = start + QUARTER_MS
    while calendar.hour_start(ts, tz) == start:
        ts += QUARTER_MS
    return ts


def group(rows: Iterable[tuple[int, float, int]], key: Callable[[int], K]) -> dict[K, Bucket]:
    """Sum 15-minute ``(bucket_ms, wh, flags)`` rows by ``key(bucket_ms)``."""
    out: dict[K, Bucket] = {}
    for start, wh, flags in rows:
        k = key(start)
        bucket = out.get(k)
        if bucket is None:
            bucket = out[k] = Bucket()
        bucket.wh += wh
        bucket.flags |= flags
    return out


class BucketWriter:
    """Writes for one gateway in one transaction; ``tz`` is its home's zone."""

    def __init__(self, conn: sa.Connection, key: tuple[str, str, str], tz: ZoneInfo) -> None:
        self.conn = conn
        self.gateway_id = key[0]
        self.tz = tz

    def _where(self, table: sa.Table, meter: str, channel: str) -> list[sa.ColumnElement[bool]]:
        c = table.c
        return [c.gateway_id == self.gateway_id, c.meter_id == meter, c.channel == channel]

    def _insert(self, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows given in the table's column order."""
        if len(rows) > _COPY_FROM and self.conn.dialect.name == "postgresql":
            self._copy(table, rows)
            return
        names = [c.name for c in table.columns]
        for first in range(0, len(rows), _CHUNK):
            self.conn.execute(table.insert(), [dict(zip(names, r, strict=True))
                                               for r in rows[first:first + _CHUNK]])

    def _copy(self, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        """COPY into ``table`` inside the caller's transaction (same DBAPI connection)."""
        names = ", ".join(c.name for c in table.columns)
        driver: Any = self.conn.connection.driver_connection
        with driver.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def replace(self, meter: str, channel: str, lo: int, hi: int,
                buckets: Mapping[int, Bucket]) -> None:
        """Make ``[lo, hi)`` hold exactly ``buckets``, and its hours and days their sums."""
        if hi <= lo:
            return
        where = self._where(energy_15m, meter, channel)
        c = energy_15m.c
        self.conn.execute(energy_15m.delete().where(*where, c.bucket_ms >= lo, c.bucket_ms < hi))
        gw = self.gateway_id
        self._insert(energy_15m, [(gw, meter, channel, start, b.wh, b.flags)
                                  for start, b in sorted(buckets.items())])
        tz = self.tz
        d_lo = calendar.day_start(calendar.day_of(lo, tz), tz)
        d_hi = calendar.day_start(calendar.day_of(hi - 1, tz) + timedelta(days=1), tz)
        edges = self.conn.execute(
            sa.select(c.bucket_ms, c.wh, c.flags).where(
                *where, c.bucket_ms >= d_lo, c.bucket_ms < d_hi,
                sa.or_(c.bucket_ms < lo, c.bucket_ms >= hi)))
        rows = [(int(s), float(w), int(f)) for s, w, f in edges]
        rows += [(s, b.wh, b.flags) for s, b in buckets.items()]
        h_lo = calendar.hour_start(lo, tz)
        h_hi = hour_end(calendar.hour_start(hi - 1, tz), tz)
        self._replace_hours(meter, channel, h_lo, h_hi,
                            [r for r in rows if h_lo <= r[0] < h_hi])
        self._replace_days(meter, channel, d_lo, d_hi, rows)

    def _replace_hours(self, meter: str, channel: str, lo: int, hi: int,
                       rows: list[tuple[int, float, int]]) -> None:
        c = energy_hourly.c
        self.conn.execute(energy_hourly.delete().where(
            *self._where(energy_hourly, meter, channel), c.bucket_ms >= lo, c.bucket_ms < hi))
        hours = group(rows, lambda ts: calendar.hour_start(ts, self.tz))
        gw = self.gateway_id
        self._insert(energy_hourly, [(gw, meter, channel, start, b.wh, b.flags)
                                     for start, b in sorted(hours.items())])

    def _replace_days(self, meter: str, channel: str, lo: int, hi: int,
                      rows: list[tuple[int, float, int]]) -> None:
        c = energy_daily.c
        self.conn.execute(energy_daily.delete().where(
            *self._where(energy_daily, meter, channel), c.start_ms >= lo, c.start_ms < hi))
        days = group(rows, lambda ts: calendar.day_of(ts, self.tz))
        out = []
        for day, b in sorted(days.items()):
            start, end = calendar.day_bounds(day, self.tz)
            out.append((self.gateway_id, meter, channel, str(day), start, end, b.wh, b.flags))
        self._insert(energy_daily, out)
