"""Readings held back in the buffer until the clock is synced (SQL of the ``held`` table).

A Raspberry Pi has no real-time clock: until NTP has set it, ``time.time()`` is whatever the
last shutdown left (fake-hwclock) or systemd's build date. A reading taken then is stored as
usual *and* gets a ``held`` row with the boot it was taken in and its monotonic time
(``mono_ms = ts - wall_minus_mono_ms`` at the time). The drain does not send held readings.

- When sync is seen in the same boot, :func:`correct` rewrites ``ts = mono_ms + offset`` with
  the now-correct ``offset = wall - monotonic`` and releases them: their time is exact.
- Readings of another boot (monotonic time restarted, nothing to correct them with), or held
  longer than the deadline, are released by :func:`release` with quality ``unsynced`` (only
  ``good`` ones change: ``error`` has no value and ``suspect`` is already excluded from totals).

Rows whose reading was thinned or dropped meanwhile are simply deleted with the others.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.models import MAX_TS_MS, MIN_TS_MS, Reading

__all__ = ["HoldRelease", "UnsyncedStamp", "correct", "count_held", "insert_held", "release"]

PENDING_UNHELD = ("SELECT seq, stream, ts, value, quality FROM readings WHERE seq > ? "
                  "AND seq NOT IN (SELECT seq FROM held) ORDER BY seq LIMIT ?")
NEWEST_UNHELD = ("SELECT seq, stream, ts, value, quality FROM readings "
                 "WHERE seq NOT IN (SELECT seq FROM held) ORDER BY seq DESC LIMIT ?")


@dataclass(frozen=True)
class UnsyncedStamp:
    """How readings taken while the clock is not synced are stamped: the boot they were taken
    in, and ``wall - monotonic`` in ms at the time (so ``mono_ms = ts - wall_minus_mono_ms``)."""

    boot_id: str
    wall_minus_mono_ms: int


@dataclass(frozen=True)
class HoldRelease:
    """What a correction or release made sendable again."""

    corrected: int = 0  # ts rewritten from monotonic time: exact
    flagged: int = 0  # released with their original ts and quality ``unsynced``
    first_seq: int | None = None  # the lowest seq released (the drain rewinds to it)

    @property
    def count(self) -> int:
        return self.corrected + self.flagged


def insert_held(conn: sqlite3.Connection, first_seq: int, readings: Sequence[Reading],
                stamp: UnsyncedStamp) -> None:
    """Hold ``readings`` (seqs from ``first_seq``); call inside the append's transaction."""
    conn.executemany("INSERT INTO held (seq, boot, mono_ms) VALUES (?, ?, ?)",
                     [(first_seq + i, stamp.boot_id, r.ts - stamp.wall_minus_mono_ms)
                      for i, r in enumerate(readings)])


def count_held(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM held").fetchone()[0])


def correct(conn: sqlite3.Connection, boot_id: str, wall_minus_mono_ms: int,
            *, good: int, unsynced: int) -> HoldRelease:
    """Give every reading held in ``boot_id`` its true time and release it.

    A correction that would leave the wire's valid range (a broken clock, not a real sync)
    is released flagged instead; run inside a transaction.
    """
    first = _first_seq(conn, "boot = ?", (boot_id,))
    cur = conn.execute(
        "UPDATE readings SET ts = (SELECT h.mono_ms FROM held h WHERE h.seq = readings.seq) + ? "
        "WHERE seq IN (SELECT seq FROM held WHERE boot = ? AND mono_ms + ? BETWEEN ? AND ?)",
        (wall_minus_mono_ms, boot_id, wall_minus_mono_ms, MIN_TS_MS, MAX_TS_MS))
    corrected = cur.rowcount
    conn.execute("DELETE FROM held WHERE boot = ? AND mono_ms + ? BETWEEN ? AND ?",
                 (boot_id, wall_minus_mono_ms, MIN_TS_MS, MAX_TS_MS))
    rest = release(conn, boot_id, before_mono_ms=None, good=good, unsynced=unsynced,
                   only_boot=True)
    return HoldRelease(corrected, rest.flagged, first)


def release(conn: sqlite3.Connection, boot_id: str, *, before_mono_ms: int | None, good: int,
            unsynced: int, only_boot: bool = False) -> HoldRelease:
    """Release, flagged, held readings that can no longer be corrected: those of other boots
    and those of ``boot_id`` taken before ``before_mono_ms`` (None: none of this boot).
    With ``only_boot``, exactly the readings of ``boot_id`` (what a correction left over).
    Run inside a transaction."""
    params: tuple[object, ...]
    if only_boot:
        where, params = "boot = ?", (boot_id,)
    elif before_mono_ms is None:
        where, params = "boot != ?", (boot_id,)
    else:
        where, params = "boot != ? OR mono_ms < ?", (boot_id, before_mono_ms)
    first = _first_seq(conn, where, params)
    if first is None:
        return HoldRelease()
    conn.execute(f"UPDATE readings SET quality = ? WHERE quality = ? AND seq IN "  # noqa: S608
                 f"(SELECT seq FROM held WHERE {where})", (unsynced, good, *params))
    cur = conn.execute(f"DELETE FROM held WHERE {where}", params)  # noqa: S608
    return HoldRelease(0, cur.rowcount, first)


def _first_seq(conn: sqlite3.Connection, where: str, params: tuple[object, ...]) -> int | None:
    row = conn.execute(f"SELECT min(seq) FROM held WHERE {where}", params).fetchone()  # noqa: S608
    return None if row is None or row[0] is None else int(row[0])
