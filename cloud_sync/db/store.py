"""``SqlTelemetryStore``: the SQLAlchemy adapter behind ``TelemetryStore`` and ``TelemetryQueries``.

Every public call runs through one circuit breaker (``cloud_sync.breaker``): database errors
and timeouts count as failures, and once it is open calls fail at once with
``StorageUnavailable`` (the
REST layer answers 503 + Retry-After; the worker stops acking and retries with backoff).
Readings go in with ``ON CONFLICT DO NOTHING`` so a resent batch is a no-op; on PostgreSQL
they are COPY-ed into a per-connection temp table first, then inserted in one statement. The
same transaction marks the rollups the new readings make dirty (``analytics_marks``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from cloud_sync.breaker import STATE_OPEN, CircuitBreaker, CircuitOpen
from cloud_sync.db.analytics_marks import mark_sqlite, marks_of, pg_merge_and_mark
from cloud_sync.db.engine import is_sqlite
from cloud_sync.db.schema import READING_COLUMNS, dead_letters, gateways, readings
from cloud_sync.errors import StorageUnavailable
from cloud_sync.ports import DeadLetter, DeadLetterIn, ReadingsQuery, StoredReading
from protocols import TelemetryBatch

log = logging.getLogger(__name__)
T = TypeVar("T")
DB_ERRORS: tuple[type[BaseException], ...] = (sa.exc.DBAPIError, sa.exc.TimeoutError, OSError)
_COLS = ", ".join(READING_COLUMNS)
_SQLITE_INSERT = f"INSERT OR IGNORE INTO readings ({_COLS}) VALUES ({', '.join('?' * 8)})"  # noqa: S608
_PG_STAGE = "CREATE TEMP TABLE IF NOT EXISTS readings_stage (LIKE readings) ON COMMIT DELETE ROWS"
_PG_COPY = f"COPY readings_stage ({_COLS}) FROM STDIN"
_PG_MERGE = pg_merge_and_mark(_COLS)

Row = tuple[str, int, str, str, float | None, str, int, str]


def make_db_breaker(fail_max: int, reset_s: float) -> CircuitBreaker:
    """A breaker that counts only database failures, not bugs or bad input."""
    return CircuitBreaker(fail_max=fail_max, reset_timeout=reset_s, name="database",
                          counts=lambda exc: isinstance(exc, DB_ERRORS))


def _rows(batches: Sequence[TelemetryBatch]) -> Iterator[Row]:
    for batch in batches:
        gw = batch.gateway_id
        for r in batch.readings:
            assert r.seq is not None  # TelemetryBatch guarantees it
            yield (gw, r.seq, r.meter_id, r.channel, r.value, r.unit.value, r.ts, r.quality.value)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqlTelemetryStore:
    """Readings, gateways and dead letters in SQLite or PostgreSQL."""

    def __init__(self, engine: sa.Engine, breaker: CircuitBreaker) -> None:
        self.engine = engine
        self.breaker = breaker

    @property
    def breaker_open(self) -> bool:
        return str(self.breaker.current_state) == STATE_OPEN

    def retry_after_s(self) -> float:
        return float(self.breaker.reset_timeout)

    def _guard(self, func: Callable[[], T]) -> T:
        try:
            return self.breaker.call(func)
        except CircuitOpen as exc:
            raise StorageUnavailable("database circuit open: recent calls failed",
                                     retry_after_s=self.retry_after_s()) from exc
        except DB_ERRORS as exc:
            raise StorageUnavailable(f"database error: {_first_line(exc)}",
                                     retry_after_s=self.retry_after_s()) from exc

    # -- TelemetryStore ------------------------------------------------------------------

    def ping(self, timeout_s: float) -> None:
        def run() -> None:
            with self.engine.connect() as conn:
                if not is_sqlite(self.engine):
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
                conn.exec_driver_sql("SELECT 1")
        self._guard(run)

    def known_gateways(self, gateway_ids: Collection[str]) -> set[str]:
        if not gateway_ids:
            return set()
        # a soft-deleted gateway's telemetry is dead-lettered like an unknown gateway's
        stmt = sa.select(gateways.c.id).where(gateways.c.id.in_(list(gateway_ids)),
                                              gateways.c.deleted_at.is_(None))

        def run() -> set[str]:
            with self.engine.connect() as conn:
                return set(conn.scalars(stmt))
        return self._guard(run)

    def ingest(self, batches: Sequence[TelemetryBatch], dead: Sequence[DeadLetterIn]) -> int:
        def run() -> int:
            with self.engine.begin() as conn:
                inserted = self._insert_readings(conn, batches)
                if dead:
                    conn.execute(dead_letters.insert(), [
                        {"received_at": d.received_at, "topic": d.topic, "payload": d.payload,
                         "reason": d.reason} for d in dead])
                return inserted
        return self._guard(run)

    def _insert_readings(self, conn: sa.Connection, batches: Sequence[TelemetryBatch]) -> int:
        if not batches:
            return 0
        if is_sqlite(self.engine):
            rows = list(_rows(batches))
            result = conn.exec_driver_sql(_SQLITE_INSERT, rows)
            mark_sqlite(conn, marks_of(rows))
            return max(result.rowcount, 0)
        return self._copy_insert(conn, batches)

    @staticmethod
    def _copy_insert(conn: sa.Connection, batches: Sequence[TelemetryBatch]) -> int:
        driver: Any = conn.connection.driver_connection
        info = conn.connection.info
        with driver.cursor() as cur:
            if not info.get("readings_stage"):
                cur.execute(_PG_STAGE)
                info["readings_stage"] = True
            with cur.copy(_PG_COPY) as copy:
                for row in _rows(batches):
                    copy.write_row(row)
            cur.execute(_PG_MERGE)
            inserted = cur.fetchone()
            return int(inserted[0]) if inserted else 0

    # -- TelemetryQueries ------------------------------------------------------------------

    def gateway_exists(self, gateway_id: str) -> bool:
        return bool(self.known_gateways([gateway_id]))

    def add_gateway(self, gateway_id: str) -> bool:
        def run() -> bool:
            with self.engine.begin() as conn:
                exists = conn.scalar(sa.select(gateways.c.id).where(gateways.c.id == gateway_id))
                if exists is not None:
                    return False
                conn.execute(gateways.insert().values(id=gateway_id, created_at=now_ms()))
                return True
        return self._guard(run)

    def readings(self, query: ReadingsQuery) -> list[StoredReading]:
        c = readings.c
        stmt = sa.select(readings).where(c.gateway_id == query.gateway_id)
        if query.meter_id is not None:
            stmt = stmt.where(c.meter_id == query.meter_id)
        if query.channel is not None:
            stmt = stmt.where(c.channel == query.channel)
        if query.from_ms is not None:
            stmt = stmt.where(c.ts >= query.from_ms)
        if query.to_ms is not None:
            stmt = stmt.where(c.ts < query.to_ms)
        if query.after is not None:
            ts, seq = query.after
            stmt = stmt.where(sa.or_(c.ts > ts, sa.and_(c.ts == ts, c.seq > seq)))
        stmt = stmt.order_by(c.ts, c.seq).limit(query.limit)
        return self._select_readings(stmt)

    def latest(self, gateway_id: str) -> list[StoredReading]:
        c = readings.c
        ranked = sa.select(
            readings,
            sa.func.row_number().over(partition_by=(c.meter_id, c.channel),
                                      order_by=(c.ts.desc(), c.seq.desc())).label("rank"),
        ).where(c.gateway_id == gateway_id).subquery()
        stmt = (sa.select(*[ranked.c[name] for name in READING_COLUMNS])
                .where(ranked.c.rank == 1).order_by(ranked.c.meter_id, ranked.c.channel))
        return self._select_readings(stmt)

    def _select_readings(self, stmt: sa.Select[Any]) -> list[StoredReading]:
        def run() -> list[StoredReading]:
            with self.engine.connect() as conn:
                return [StoredReading(*row) for row in conn.execute(stmt)]
        return self._guard(run)

    def dead_letters(self, after_id: int | None, limit: int) -> list[DeadLetter]:
        stmt = sa.select(dead_letters).order_by(dead_letters.c.id).limit(limit)
        if after_id is not None:
            stmt = stmt.where(dead_letters.c.id > after_id)

        def run() -> list[DeadLetter]:
            with self.engine.connect() as conn:
                return [_dead_letter(row) for row in conn.execute(stmt)]
        return self._guard(run)

    def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        found = self.dead_letters_by_id([dead_letter_id])
        return found[0] if found else None

    def dead_letters_by_id(self, ids: Sequence[int]) -> list[DeadLetter]:
        stmt = sa.select(dead_letters).where(dead_letters.c.id.in_(list(ids)))

        def run() -> list[DeadLetter]:
            with self.engine.connect() as conn:
                return [_dead_letter(row) for row in conn.execute(stmt)]
        return self._guard(run)

    def replay_stored(self, dead_letter_id: int, batch: TelemetryBatch, now: int) -> int:
        def run() -> int:
            with self.engine.begin() as conn:
                inserted = self._insert_readings(conn, [batch])
                conn.execute(dead_letters.update()
                             .where(dead_letters.c.id == dead_letter_id)
                             .values(replayed_at=now))
                return inserted
        return self._guard(run)

    def set_dead_letter_reason(self, dead_letter_id: int, reason: str) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(dead_letters.update().where(dead_letters.c.id == dead_letter_id)
                             .values(reason=reason))
        self._guard(run)

    def count_readings(self, gateway_id: str | None = None) -> int:
        """Row count (for tests, benchmarks and operators)."""
        stmt = sa.select(sa.func.count()).select_from(readings)
        if gateway_id is not None:
            stmt = stmt.where(readings.c.gateway_id == gateway_id)

        def run() -> int:
            with self.engine.connect() as conn:
                return int(conn.scalar(stmt) or 0)
        return self._guard(run)


def _dead_letter(row: sa.Row[Any]) -> DeadLetter:
    m = row._mapping
    return DeadLetter(id=int(m["id"]), received_at=int(m["received_at"]), topic=str(m["topic"]),
                      payload=bytes(m["payload"]), reason=str(m["reason"]),
                      replayed_at=None if m["replayed_at"] is None else int(m["replayed_at"]))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__
