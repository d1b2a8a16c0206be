"""The gateway's durable telemetry buffer: SQLite in WAL mode, one file, one writer process.

Guarantees a caller can rely on:

- **seq** is assigned here, per gateway, strictly increasing for the life of the gateway: across
  restarts, after every reading was confirmed and deleted, after a crash, and after a corrupt
  file was moved aside. seqs are not contiguous: policy removals, and a reopen after an unclean
  shutdown, leave gaps (see *Seq floor*). The cloud stores ``(gateway_id, seq)`` uniquely, so a
  reused seq would silently discard a reading; gaps cost nothing.
- **Durability**: ``append`` returns after its transaction committed. WAL with
  ``synchronous=NORMAL`` keeps every committed transaction through a process crash or SIGKILL
  (the WAL is in the OS page cache). A power cut can lose the last few commits but never
  corrupts the file.
- **Seq floor**: ``<name>.seqfloor`` holds a ceiling no assigned seq has passed; it is raised
  (fsync + rename) before a seq above it is committed, ``seq_reservation`` seqs at a time. A
  reopen after an unclean shutdown (crash, power cut: ``meta.clean_close`` is 0) continues
  above the ceiling, so seqs that a power cut erased from the file are never handed out again.
  A corrupt file continues above max(its readable last seq, the ceiling).
- **Disk budget**: see :mod:`edge_agent.buffer_policy` (thin the oldest, then drop the oldest;
  every removal counted in persistent counters, one WARNING per episode). The size measured is
  the database's used pages; the WAL (checkpointed at ~4 MB) comes on top.
- **Integrity**: ``open`` runs ``PRAGMA quick_check``; a corrupt file (or one that is not a
  homewatt buffer) is moved to ``<name>.corrupt-<UTC time>`` with its -wal/-shm, logged as an
  ERROR, reported in :class:`OpenReport`, and a fresh buffer starts. Readings it held are lost
  and counted in ``dropped_total`` (and ``lost_in_recovery_total``) when they can be counted.

Thread safety: every method takes one lock; call from any one thread at a time (the runtime
uses ``asyncio.to_thread``). Only one process may open a buffer file (an ``flock``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path

from edge_agent.buffer_budget import DiskBudget
from edge_agent.buffer_files import WriterLock, read_seqfloor, write_seqfloor
from edge_agent.buffer_hold import (
    NEWEST_UNHELD,
    PENDING_UNHELD,
    HoldRelease,
    UnsyncedStamp,
    correct,
    count_held,
    insert_held,
    release,
)
from edge_agent.buffer_policy import merge_ranges
from edge_agent.buffer_schema import (
    META_CLEAN_CLOSE,
    META_DROPPED,
    META_LAST_SEQ,
    META_LOST,
    META_THINNED,
    QUALITY_BY_CODE,
    QUALITY_CODES,
    UPSERT_META,
    BufferStorageError,
    OpenReport,
    Salvage,
    open_checked,
    read_meta,
)
from edge_agent.clock import SystemClock
from edge_agent.ports import Clock
from protocols.models import Quality, Reading, SeqRange, Unit

__all__ = ["BufferStats", "BufferStorageError", "OpenReport", "SqliteBuffer"]

logger = logging.getLogger(__name__)

_INSERT = "INSERT INTO readings (seq, stream, ts, value, quality) VALUES (?, ?, ?, ?, ?)"
_PENDING = ("SELECT seq, stream, ts, value, quality FROM readings WHERE seq > ? "
            "ORDER BY seq LIMIT ?")
_NEWEST = "SELECT seq, stream, ts, value, quality FROM readings ORDER BY seq DESC LIMIT ?"
StreamKey = tuple[str, str, str]


@dataclass(frozen=True)
class BufferStats:
    depth: int  # readings waiting for cloud confirmation
    oldest_ts_ms: int | None  # ts of the lowest-seq unconfirmed reading
    last_seq: int  # highest seq ever assigned (0 if none)
    dropped_total: int  # readings lost without confirmation: policy (thinned + dropped) + recovery
    thinned_total: int
    size_bytes: int  # used database pages; the WAL comes on top
    lost_in_recovery_total: int = 0  # of dropped_total: in corrupt files moved aside
    held_unsynced: int = 0  # of depth: taken before the clock was synced, not sent yet


class SqliteBuffer:
    """See the module docstring for the guarantees. Methods raise :class:`BufferStorageError`
    on storage failures (disk full, I/O error, file in use); ``open`` handles corruption."""

    def __init__(self, path: Path, *, max_bytes: int = 256 * 1024 * 1024,
                 thin_to_minutes: int = 15, clock: Clock | None = None,
                 seq_reservation: int = 100_000) -> None:
        self._path = path
        self._clock: Clock = clock or SystemClock()
        self._reservation = seq_reservation
        self._lock = threading.Lock()
        self._writer_lock = WriterLock(path)
        self._conn: sqlite3.Connection | None = None
        self._streams: dict[StreamKey, int] = {}
        self._stream_info: dict[int, tuple[str, str, Unit]] = {}
        self._last_seq = 0
        self._reserved = 0
        self._depth = 0
        self._held = 0
        self._budget = DiskBudget(path, max_bytes=max_bytes, bucket_ms=thin_to_minutes * 60_000)

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> OpenReport:
        """Create directories and schema, check integrity, recover a corrupt file."""
        with self._lock:
            if self._conn is not None:
                raise BufferStorageError(self._path, "already open")
            self._path.parent.mkdir(parents=True, exist_ok=True)
            if not self._writer_lock.acquire():
                raise BufferStorageError(self._path, "in use by another process")
            try:
                conn, report, salvaged = open_checked(self._path, self._clock.now_ms())
                self._conn = conn
                self._load_state(conn, salvaged)
            except sqlite3.Error as exc:
                self._close_quietly()
                raise BufferStorageError(self._path, f"cannot open: {exc}") from exc
            except BaseException:
                self._close_quietly()
                raise
            return report

    def close(self) -> None:
        """Mark the file cleanly closed (fsynced) and release it; idempotent."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            try:
                self._write_clean_flag(conn, 1)
            except sqlite3.Error as exc:
                logger.warning("buffer %s: could not mark a clean close: %s", self._path, exc)
            finally:
                self._close_quietly()

    def _close_quietly(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._writer_lock.release()

    def _load_state(self, conn: sqlite3.Connection, salvaged: Salvage | None) -> None:
        meta = read_meta(conn)
        max_row = conn.execute("SELECT max(seq) FROM readings").fetchone()[0] or 0
        last = max(meta.get(META_LAST_SEQ, 0), max_row)
        counters = {key: meta.get(key, 0) for key in (META_DROPPED, META_THINNED, META_LOST)}
        if salvaged is not None:
            last = max(last, salvaged.last_seq or 0)
            for key, value in salvaged.counters.items():
                counters[key] += value
            counters[META_LOST] += salvaged.pending or 0
            counters[META_DROPPED] += salvaged.pending or 0
        floor = read_seqfloor(self._path)
        if meta.get(META_CLEAN_CLOSE) != 1 and floor > last:
            logger.info("buffer %s was not closed cleanly: seqs continue above the reserved "
                        "ceiling %d (last committed %d)", self._path, floor, last)
            last = floor
        self._last_seq, self._reserved = last, floor
        self._depth = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        self._held = count_held(conn)
        self._budget.load(conn, counters)
        self._streams.clear()
        self._stream_info.clear()
        for sid, meter_id, channel, unit in conn.execute("SELECT * FROM streams"):
            self._remember_stream(sid, (meter_id, channel, unit))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(UPSERT_META, [(META_LAST_SEQ, last), *counters.items()])
        conn.execute("COMMIT")
        self._write_clean_flag(conn, 0)
        # A crash between an append's commit and its policy run can leave the file over budget.
        self._depth -= self._budget.enforce(conn, self._depth)

    def _write_clean_flag(self, conn: sqlite3.Connection, value: int) -> None:
        """Commit ``clean_close`` with an fsync, so a power cut cannot leave a stale 1."""
        conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute(UPSERT_META, (META_CLEAN_CLOSE, value))
        finally:
            conn.execute("PRAGMA synchronous=NORMAL")

    def _remember_stream(self, sid: int, key: StreamKey) -> None:
        self._streams[key] = sid
        self._stream_info[sid] = (key[0], key[1], Unit(key[2]))

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BufferStorageError(self._path, "not open (call open() first)")
        return self._conn

    # -- writing -----------------------------------------------------------------------------

    def append(self, readings: Sequence[Reading]) -> list[Reading]:
        """Store readings in one transaction; return them with their assigned ``seq``.

        Any ``seq`` already set on an input is ignored. Building the returned copies costs
        several times the insert itself: hot paths that only need the seqs use
        :meth:`append_seqs`.
        """
        seqs = self.append_seqs(readings)
        return [r.model_copy(update={"seq": s}) for r, s in zip(readings, seqs, strict=True)]

    def append_seqs(self, readings: Sequence[Reading], *,
                    unsynced: UnsyncedStamp | None = None) -> range:
        """Store readings in one transaction; ``readings[i]`` got seq ``result[i]``.

        With ``unsynced`` (the clock is not synced yet) they are also held back from the
        drain until :meth:`correct_unsynced` or :meth:`release_unsynced` (see
        :mod:`edge_agent.buffer_hold`).
        """
        with self._lock:
            conn = self._require_open()
            first = self._last_seq + 1
            last = self._last_seq + len(readings)
            if not readings:
                return range(first, first)
            if last > self._reserved:
                self._raise_floor(last)
            rows = self._rows(conn, readings, first)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_INSERT, rows)
                if unsynced is not None:
                    insert_held(conn, first, readings, unsynced)
                conn.execute("UPDATE meta SET value = ? WHERE key = ?", (last, META_LAST_SEQ))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise BufferStorageError(self._path, f"append failed: {exc}") from exc
            except BaseException:
                self._rollback(conn)
                raise
            self._last_seq = last
            self._depth += len(readings)
            if unsynced is not None:
                self._held += len(readings)
            try:
                self._depth -= self._budget.enforce(conn, self._depth)
            except BufferStorageError as exc:
                # The append itself committed: report that, retry the policy on the next one.
                logger.error("%s", exc)
            return range(first, last + 1)

    def _rows(self, conn: sqlite3.Connection, readings: Sequence[Reading],
              first: int) -> list[tuple[int, int, int, float | None, int]]:
        streams, codes = self._streams, QUALITY_CODES
        try:
            return [(seq, streams[(r.meter_id, r.channel, r.unit)], r.ts, r.value,
                     codes[r.quality]) for seq, r in zip(count(first), readings)]
        except KeyError:
            self._register_streams(conn, readings)
            return self._rows(conn, readings, first)

    def _register_streams(self, conn: sqlite3.Connection, readings: Sequence[Reading]) -> None:
        """Intern new (meter, channel, unit) names in their own transaction: an unused stream
        row left by a failed append costs nothing."""
        new = [k for k in dict.fromkeys((r.meter_id, r.channel, r.unit) for r in readings)
               if k not in self._streams]
        try:
            conn.execute("BEGIN IMMEDIATE")
            ids = [conn.execute("INSERT INTO streams (meter_id, channel, unit) VALUES (?, ?, ?) "
                                "RETURNING id", (m, c, Unit(u).value)).fetchone()[0]
                   for m, c, u in new]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise BufferStorageError(self._path, f"cannot store stream names: {exc}") from exc
        for key, sid in zip(new, ids, strict=True):
            self._remember_stream(sid, key)

    def _raise_floor(self, needed: int) -> None:
        ceiling = needed + self._reservation
        try:
            write_seqfloor(self._path, ceiling)
        except OSError as exc:
            raise BufferStorageError(self._path, f"cannot write the seq floor: {exc}") from exc
        self._reserved = ceiling

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def confirm(self, ranges: Iterable[SeqRange]) -> int:
        """Delete the stored readings in these inclusive ranges (the cloud has them); return how
        many were deleted. Repeated or overlapping ranges are harmless."""
        merged = merge_ranges(ranges)
        with self._lock:
            conn = self._require_open()
            removed = 0
            try:
                conn.execute("BEGIN IMMEDIATE")
                for first, last in merged:
                    cur = conn.execute("DELETE FROM readings WHERE seq BETWEEN ? AND ?",
                                       (first, last))
                    removed += cur.rowcount
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise BufferStorageError(self._path, f"confirm failed: {exc}") from exc
            self._depth -= removed
            if removed:
                self._budget.end_episode()
            return removed

    # -- readings taken before the clock was synced ---------------------------------------

    def correct_unsynced(self, boot_id: str, wall_minus_mono_ms: int) -> HoldRelease:
        """The clock is synced now: give readings held in ``boot_id`` their true time."""
        return self._hold_change(lambda conn: correct(
            conn, boot_id, wall_minus_mono_ms, good=QUALITY_CODES[Quality.GOOD],
            unsynced=QUALITY_CODES[Quality.UNSYNCED]))

    def release_unsynced(self, boot_id: str, before_mono_ms: int | None) -> HoldRelease:
        """Send the uncorrectable ones flagged: other boots', and this boot's taken before
        ``before_mono_ms`` (held past the deadline)."""
        return self._hold_change(lambda conn: release(
            conn, boot_id, before_mono_ms=before_mono_ms, good=QUALITY_CODES[Quality.GOOD],
            unsynced=QUALITY_CODES[Quality.UNSYNCED]))

    def _hold_change(self, change: Callable[[sqlite3.Connection], HoldRelease]) -> HoldRelease:
        with self._lock:
            conn = self._require_open()
            if self._held == 0:
                return HoldRelease()
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = change(conn)
                conn.execute("COMMIT")
                self._held = count_held(conn)
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise BufferStorageError(self._path, f"clock correction failed: {exc}") from exc
            return result

    # -- reading -----------------------------------------------------------------------------

    def pending(self, after_seq: int = 0, limit: int = 1000) -> list[Reading]:
        """Unconfirmed readings with ``seq > after_seq``, in seq order, at most ``limit``:
        page with ``after_seq = page[-1].seq``."""
        return self._select(_PENDING, PENDING_UNHELD, (after_seq, limit))

    def newest_pending(self, limit: int) -> list[Reading]:
        """The ``limit`` highest-seq unconfirmed readings, in seq order (live data first)."""
        rows = self._select(_NEWEST, NEWEST_UNHELD, (limit,))
        rows.reverse()
        return rows

    def _select(self, sql: str, sql_held: str, params: tuple[int, ...]) -> list[Reading]:
        """Run ``sql``, or ``sql_held`` (which skips held readings) while any are held."""
        with self._lock:
            conn = self._require_open()
            try:
                rows = conn.execute(sql_held if self._held else sql, params).fetchall()
            except sqlite3.Error as exc:
                raise BufferStorageError(self._path, f"read failed: {exc}") from exc
            info, quality = self._stream_info, QUALITY_BY_CODE
            result = []
            for seq, sid, ts, value, code in rows:
                meter_id, channel, unit = info[sid]
                result.append(Reading(meter_id=meter_id, channel=channel, value=value,
                                      unit=unit, ts=ts, quality=quality[code], seq=seq))
            return result

    def stats(self) -> BufferStats:
        with self._lock:
            conn = self._require_open()
            try:
                row = conn.execute("SELECT ts FROM readings ORDER BY seq LIMIT 1").fetchone()
                size = self._budget.used_bytes(conn)
            except sqlite3.Error as exc:
                raise BufferStorageError(self._path, f"stats failed: {exc}") from exc
            return BufferStats(
                depth=self._depth,
                oldest_ts_ms=None if row is None else int(row[0]),
                last_seq=self._last_seq,
                dropped_total=self._budget.counters[META_DROPPED],
                thinned_total=self._budget.counters[META_THINNED],
                size_bytes=size,
                lost_in_recovery_total=self._budget.counters[META_LOST],
                held_unsynced=self._held,
            )
