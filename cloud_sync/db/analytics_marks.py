"""Dirty marks for the rollup jobs, written inside the ingest transaction.

A late batch (the edge re-sends its buffer after an outage, interleaved with live readings)
lands anywhere in time, so "what is new" is not a seq watermark: every ingest records which
hour of which series got new good readings, in the same transaction as the readings. One mark
per (series, UTC hour) and transaction, however many readings: an upsert that bumps ``gen``.

PostgreSQL does it in the statement that moves the COPY-ed rows into ``readings``, from the
rows actually inserted (``RETURNING``), so a resent batch marks nothing. Rows are marked in key
order, the same order the rollup job locks them in, so concurrent ingests and jobs never
deadlock. SQLite marks every row of the batch (it has one writer and no RETURNING for
``executemany``); a resend then costs one idempotent recompute.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from cloud_sync.analytics.rollup import HOUR_MS, ROLLUP_SOURCE_CHANNELS

_CHANNELS = ", ".join(f"'{c}'" for c in ROLLUP_SOURCE_CHANNELS)
_UPSERT_TAIL = ("ON CONFLICT (gateway_id, meter_id, channel, from_ms) DO UPDATE "
                "SET gen = analytics_dirty.gen + 1, to_ms = {greatest}(analytics_dirty.to_ms, "
                "excluded.to_ms)")


def pg_merge_and_mark(columns: str) -> str:
    """One statement: stage -> readings (duplicates skipped) and marks for what went in;
    its single row is the number of readings inserted."""
    return (
        f"WITH ins AS (INSERT INTO readings ({columns}) SELECT {columns} FROM readings_stage "  # noqa: S608
        "ON CONFLICT DO NOTHING RETURNING gateway_id, meter_id, channel, ts, quality), "
        "marks AS (INSERT INTO analytics_dirty (gateway_id, meter_id, channel, from_ms, to_ms, "
        f"gen) SELECT gateway_id, meter_id, channel, ts - ts % {HOUR_MS}, "
        f"ts - ts % {HOUR_MS} + {HOUR_MS}, 1 FROM ins "
        f"WHERE quality = 'good' AND channel IN ({_CHANNELS}) "
        "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4 "
        + _UPSERT_TAIL.format(greatest="GREATEST") + ") SELECT count(*) FROM ins")


_SQLITE_MARK = (
    "INSERT INTO analytics_dirty (gateway_id, meter_id, channel, from_ms, to_ms, gen) "
    "VALUES (?, ?, ?, ?, ?, 1) " + _UPSERT_TAIL.format(greatest="max"))

Mark = tuple[str, str, str, int, int]


def marks_of(rows: Iterable[tuple[str, int, str, str, float | None, str, int, str]]
             ) -> list[Mark]:
    """Distinct (series, hour) marks of the good rollup-source readings among ``rows``."""
    wanted = set(ROLLUP_SOURCE_CHANNELS)
    found = {(gw, meter, channel, ts - ts % HOUR_MS)
             for gw, _seq, meter, channel, _v, _u, ts, quality in rows
             if quality == "good" and channel in wanted}
    return [(gw, m, c, h, h + HOUR_MS) for gw, m, c, h in sorted(found)]


def mark_sqlite(conn: sa.Connection, marks: list[Mark]) -> None:
    if marks:
        conn.exec_driver_sql(_SQLITE_MARK, marks)


def mark_range(conn: sa.Connection, series: tuple[str, str, str], from_ms: int, to_ms: int,
               ) -> None:
    """Mark one range dirty (a rebuild, a zone change); works on both backends."""
    gateway_id, meter_id, channel = series
    greatest = "GREATEST" if conn.dialect.name == "postgresql" else "max"
    conn.execute(sa.text(
        "INSERT INTO analytics_dirty (gateway_id, meter_id, channel, from_ms, to_ms, gen) "
        "VALUES (:g, :m, :c, :f, :t, 1) " + _UPSERT_TAIL.format(greatest=greatest)),
        {"g": gateway_id, "m": meter_id, "c": channel, "f": from_ms, "t": to_ms})
