"""``SqlRollupStore``: the rollup job's storage: claim dirty series, recompute their buckets.

Safe on several replicas. A job first **claims** series in a short transaction: it reads dirty
marks (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two claimers never wait on each other) and
takes a lease per series with a conditional upsert on ``analytics_claims`` (only a free or
expired lease is taken; SQLite runs the same statement under its single writer lock). Then it
**recomputes** each claimed series in one transaction: it reads the marks (with their ``gen``),
the readings around them, rewrites the affected 15-minute, hourly and daily buckets, deletes
only the marks whose ``gen`` it read (a mark bumped meanwhile by an ingest stays for the next
round) and releases the lease. Recomputing is a pure function of the readings, so a crash at
any point, a repeated run or a taken-over lease gives the same rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cloud_sync.analytics.rollup import (
    COUNTER_CHANNELS,
    DEFAULT_RULES,
    HOUR_MS,
    POWER_CHANNEL,
    CounterRules,
    Sample,
    ceil_quarter,
    counter_buckets,
    floor_quarter,
    power_buckets,
)
from cloud_sync.breaker import CircuitBreaker
from cloud_sync.db.analytics_marks import mark_range
from cloud_sync.db.analytics_series import series_ranges
from cloud_sync.db.analytics_writes import BucketWriter
from cloud_sync.db.guarded import GuardedStore, guard_db
from cloud_sync.db.schema import readings
from cloud_sync.db.schema_analytics import analytics_claims, analytics_dirty, analytics_zones

T = TypeVar("T")
SeriesKey = tuple[str, str, str]
# Dirty ranges closer than this are recomputed together (one read of the readings between).
_MERGE_GAP_MS = 6 * 3_600_000


@dataclass(frozen=True)
class RecomputeResult:
    series: SeriesKey
    ranges: int
    buckets: int  # 15-minute buckets rewritten
    cleared: bool  # every mark was cleared (False: new marks arrived meanwhile)


def merge_ranges(ranges: Sequence[tuple[int, int]], gap_ms: int = _MERGE_GAP_MS
                 ) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ranges; neighbours closer than ``gap_ms`` become one."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + gap_ms:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


class SqlRollupStore(GuardedStore):
    """Shares the engine and the database breaker with the other stores; ``zone_of`` gives a
    gateway's home zone (``GatewayZones``)."""

    def __init__(self, engine: sa.Engine, breaker: CircuitBreaker,
                 zone_of: Callable[[str], ZoneInfo], rules: CounterRules = DEFAULT_RULES
                 ) -> None:
        super().__init__(engine, breaker)
        self.zone_of = zone_of
        self.rules = rules
        self.owner = secrets.token_hex(8)

    def _guard(self, func: Callable[[], T]) -> T:
        return guard_db(self.breaker, func)

    # -- claims --------------------------------------------------------------------------

    def claim(self, now_ms: int, limit: int, lease_ms: int) -> list[SeriesKey]:
        """Take leases on up to ``limit`` dirty series nobody holds; returns them."""
        d, c = analytics_dirty.c, analytics_claims.c
        held = sa.select(c.owner).where(c.gateway_id == d.gateway_id, c.meter_id == d.meter_id,
                                        c.channel == d.channel, c.expires_at > now_ms)
        pick = (sa.select(d.gateway_id, d.meter_id, d.channel).where(~held.exists())
                .order_by(d.from_ms).limit(limit * 4)
                .with_for_update(of=analytics_dirty, skip_locked=True))

        def run() -> list[SeriesKey]:
            with self.engine.begin() as conn:
                candidates = list(dict.fromkeys(
                    (str(g), str(m), str(c)) for g, m, c in conn.execute(pick)))
                won: list[SeriesKey] = []
                for key in candidates[:limit]:
                    if self._take_lease(conn, key, now_ms, lease_ms):
                        won.append(key)
                return won
        return self._guard(run)

    def _take_lease(self, conn: sa.Connection, key: SeriesKey, now_ms: int,
                    lease_ms: int) -> bool:
        stmt = sa.text(
            "INSERT INTO analytics_claims (gateway_id, meter_id, channel, owner, expires_at) "
            "VALUES (:g, :m, :c, :o, :e) ON CONFLICT (gateway_id, meter_id, channel) "
            "DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE analytics_claims.expires_at <= :now RETURNING owner")
        row = conn.execute(stmt, {"g": key[0], "m": key[1], "c": key[2], "o": self.owner,
                                  "e": now_ms + lease_ms, "now": now_ms}).first()
        return row is not None and row[0] == self.owner

    # -- recompute -------------------------------------------------------------------------

    def recompute(self, key: SeriesKey) -> RecomputeResult:
        """Rewrite every bucket the series' dirty marks can have changed; release the lease."""
        def run() -> RecomputeResult:
            with self.engine.begin() as conn:
                marks = self._marks(conn, key)
                ranges = merge_ranges([(lo, hi) for lo, hi, _gen in marks])
                buckets = 0
                if not (key[2] == POWER_CHANNEL and self._has_counters(conn, key)):
                    writer = BucketWriter(conn, key, self.zone_of(key[0]))
                    for lo, hi in ranges:
                        buckets += self._recompute_range(conn, writer, key, lo, hi)
                cleared = self._clear_marks(conn, key, marks)
                self._release(conn, key)
                return RecomputeResult(key, len(ranges), buckets, cleared)
        return self._guard(run)

    @staticmethod
    def _marks(conn: sa.Connection, key: SeriesKey) -> list[tuple[int, int, int]]:
        d = analytics_dirty.c
        rows = conn.execute(sa.select(d.from_ms, d.to_ms, d.gen).where(
            d.gateway_id == key[0], d.meter_id == key[1], d.channel == key[2])
            .order_by(d.from_ms))
        return [(int(a), int(b), int(g)) for a, b, g in rows]

    @staticmethod
    def _has_counters(conn: sa.Connection, key: SeriesKey) -> bool:
        c = readings.c
        return conn.scalar(sa.select(c.seq).where(
            c.gateway_id == key[0], c.meter_id == key[1],
            c.channel.in_(COUNTER_CHANNELS)).limit(1)) is not None

    def _recompute_range(self, conn: sa.Connection, writer: BucketWriter, key: SeriesKey,
                         lo: int, hi: int) -> int:
        prev = _neighbour(conn, key, lo, before=True)
        nxt = _neighbour(conn, key, hi, before=False)
        win_lo = floor_quarter(prev if prev is not None else lo)
        win_hi = ceil_quarter(nxt if nxt is not None else hi)
        first = _neighbour(conn, key, win_lo, before=True)
        last = _neighbour(conn, key, win_hi, before=False)
        samples = _samples(conn, key, first if first is not None else win_lo,
                           last if last is not None else win_hi)
        if key[2] == POWER_CHANNEL:
            imp, exp = power_buckets(samples, win_lo, win_hi, self.rules)
            writer.replace(f"{key[1]}", "energy_import", win_lo, win_hi, imp)
            writer.replace(f"{key[1]}", "energy_export", win_lo, win_hi, exp)
            return len(imp) + len(exp)
        out = counter_buckets(samples, win_lo, win_hi, self.rules)
        writer.replace(key[1], key[2], win_lo, win_hi, out)
        return len(out)

    def _clear_marks(self, conn: sa.Connection, key: SeriesKey,
                     marks: list[tuple[int, int, int]]) -> bool:
        d = analytics_dirty.c
        cleared = True
        for lo, _hi, gen in marks:  # in from_ms order: the order ingest locks them in
            result = conn.execute(analytics_dirty.delete().where(
                d.gateway_id == key[0], d.meter_id == key[1], d.channel == key[2],
                d.from_ms == lo, d.gen == gen))
            cleared = cleared and result.rowcount == 1
        return cleared

    def _release(self, conn: sa.Connection, key: SeriesKey) -> None:
        c = analytics_claims.c
        conn.execute(analytics_claims.delete().where(
            c.gateway_id == key[0], c.meter_id == key[1], c.channel == key[2],
            c.owner == self.owner))

    def mark_rebuild(self, gateway_id: str | None = None) -> int:
        """Mark every series (of one gateway, or all) dirty over all its readings: the next
        job runs rebuild their rollups (after a bulk import, a rules or zone change)."""
        def run() -> int:
            with self.engine.begin() as conn:
                count = 0
                for gw, meter, channel, lo, hi in series_ranges(conn, gateway_id):
                    mark_range(conn, (gw, meter, channel), lo - lo % HOUR_MS,
                               hi - hi % HOUR_MS + HOUR_MS)
                    count += 1
                return count
        return self._guard(run)

    def sync_zones(self, zones: Mapping[str, str]) -> list[str]:
        """Record each gateway's zone (``zones``: gateway -> IANA name, from the registry);
        a gateway whose zone differs from the one its rollups were computed in (UTC when
        none was recorded) is marked for a rebuild. Returns those gateways."""
        z = analytics_zones.c

        def run() -> list[str]:
            with self.engine.begin() as conn:
                known = {str(g): str(tz) for g, tz in conn.execute(
                    sa.select(z.gateway_id, z.timezone))}
                changed = sorted(g for g, tz in zones.items() if known.get(g, "UTC") != tz)
                for gw in changed:
                    conn.execute(analytics_zones.delete().where(z.gateway_id == gw))
                    conn.execute(analytics_zones.insert().values(gateway_id=gw,
                                                                 timezone=zones[gw]))
                return changed
        changed = self._guard(run)
        for gw in changed:
            self.mark_rebuild(gw)
        return changed

    def pending(self) -> int:
        """Dirty marks waiting (for metrics, tests and the benchmark)."""
        def run() -> int:
            with self.engine.connect() as conn:
                return int(conn.scalar(sa.select(sa.func.count()).select_from(analytics_dirty))
                           or 0)
        return self._guard(run)


def _good(key: SeriesKey) -> list[sa.ColumnElement[bool]]:
    c = readings.c
    return [c.gateway_id == key[0], c.meter_id == key[1], c.channel == key[2],
            c.quality == "good", c.value.is_not(None)]


def _neighbour(conn: sa.Connection, key: SeriesKey, ts: int, *, before: bool) -> int | None:
    """ts of the last good reading before ``ts`` (or the first at/after it)."""
    c = readings.c
    stmt = sa.select(c.ts).where(*_good(key))
    stmt = (stmt.where(c.ts < ts).order_by(c.ts.desc()) if before
            else stmt.where(c.ts >= ts).order_by(c.ts))
    value = conn.scalar(stmt.limit(1))
    return None if value is None else int(value)


def _samples(conn: sa.Connection, key: SeriesKey, lo: int, hi: int) -> list[Sample]:
    """Good samples with ``lo <= ts <= hi``, sorted, one per ts (the highest seq wins)."""
    c = readings.c
    rows = conn.execute(sa.select(c.ts, c.value).where(*_good(key), c.ts >= lo, c.ts <= hi)
                        .order_by(c.ts, c.seq))
    by_ts: dict[int, float] = {}
    for ts, value in rows:
        by_ts[int(ts)] = float(value)
    return [Sample(ts, v) for ts, v in by_ts.items()]
