"""The buffer's on-disk layout, opening with an integrity check, and recovery of a corrupt file.

Layout (``user_version`` 2), chosen for append speed and size (~22 bytes a reading measured,
against ~32 with the names stored as text on every row):

- ``readings(seq INTEGER PRIMARY KEY, stream, ts, value REAL NULL, quality)``: one row a
  reading; ``stream`` points into ``streams`` (meter_id, channel, unit interned once), ``quality``
  is a small integer code.
- ``meta(key, value)``: ``last_seq`` (highest seq ever assigned, written in the same transaction
  as the rows that use it), the persistent policy counters, and ``clean_close``.
- ``held(seq, boot, mono_ms)`` (version 2): readings taken before the clock was synced, with
  the boot id and monotonic time they were taken at; the drain skips them until
  :mod:`edge_agent.buffer_hold` corrects or releases them. A version-1 file gains the table
  on open.

seq is assigned by the buffer from ``meta.last_seq``, not by AUTOINCREMENT: the buffer needs the
value before the insert anyway (to raise the seq floor file first), and an explicit counter in
the same transaction gives the same never-reused guarantee as ``sqlite_sequence``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from edge_agent.buffer_files import move_aside
from edge_agent.errors import EdgeAgentError
from protocols.models import Quality

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26

DDL = (
    "CREATE TABLE streams (id INTEGER PRIMARY KEY, meter_id TEXT NOT NULL, "
    "channel TEXT NOT NULL, unit TEXT NOT NULL, UNIQUE (meter_id, channel, unit))",
    "CREATE TABLE readings (seq INTEGER PRIMARY KEY, stream INTEGER NOT NULL, "
    "ts INTEGER NOT NULL, value REAL, quality INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
)
# Version 1 -> 2: the table of readings held back until the clock is synced.
UPGRADES: dict[int, tuple[str, ...]] = {
    1: ("CREATE TABLE held (seq INTEGER PRIMARY KEY, boot TEXT NOT NULL, "
        "mono_ms INTEGER NOT NULL)",),
}

QUALITY_CODES: dict[Quality, int] = {
    Quality.GOOD: 0, Quality.STALE: 1, Quality.ERROR: 2, Quality.SUSPECT: 3, Quality.UNSYNCED: 4,
}
QUALITY_BY_CODE: dict[int, Quality] = {code: q for q, code in QUALITY_CODES.items()}

META_LAST_SEQ = "last_seq"
META_DROPPED = "dropped_total"
META_THINNED = "thinned_total"
META_LOST = "lost_in_recovery_total"
META_CLEAN_CLOSE = "clean_close"
UPSERT_META = ("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value")


class BufferStorageError(EdgeAgentError):
    """The buffer file cannot be used for a reason other than corruption (permissions, disk
    I/O, locked by another process); ``path`` names the file."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"telemetry buffer {path}: {message}")
        self.path = path


class CorruptDatabase(Exception):
    """Internal: the file is not a usable buffer and must be moved aside."""


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """True for 'malformed' and 'not a database'; False for locked, I/O, permission errors."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def check_and_prepare(conn: sqlite3.Connection) -> None:
    """Integrity-check an open connection and create the schema if the file is new.

    Raises :class:`CorruptDatabase` when ``PRAGMA quick_check`` fails, the file is not SQLite,
    or it holds another schema (the file is kept, moved aside, so nothing is destroyed).
    """
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in rows[:3])[:200]
            raise CorruptDatabase(f"integrity check failed: {detail}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            raise CorruptDatabase(str(exc)) from exc
        raise
    if version == 0 and tables == 0:
        _migrate(conn, (*DDL, *(sql for v in sorted(UPGRADES) for sql in UPGRADES[v])))
    elif 1 <= version < SCHEMA_VERSION:
        _migrate(conn, tuple(sql for v in sorted(UPGRADES) if v >= version
                             for sql in UPGRADES[v]))
    elif version != SCHEMA_VERSION:
        raise CorruptDatabase(f"not a homewatt buffer of schema {SCHEMA_VERSION} "
                              f"(user_version {version}, {tables} schema objects)")


def _migrate(conn: sqlite3.Connection, statements: tuple[str, ...]) -> None:
    """Run ``statements`` and set the current ``user_version`` in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    for statement in statements:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")


def read_meta(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


@dataclass(frozen=True)
class Salvage:
    """What could still be read from a corrupt file (None where even that failed)."""

    last_seq: int | None
    counters: dict[str, int]
    pending: int | None


def salvage(path: Path) -> Salvage:
    """Read, best effort and read-only, the last seq, counters and pending count of a corrupt
    file: the new file continues them so seqs are not reused and losses stay counted."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return Salvage(None, {}, None)
    try:
        meta = _try_int_rows(conn, "SELECT key, value FROM meta")
        max_seq = _try_int_rows(conn, "SELECT 'max', max(seq) FROM readings")
        count = _try_int_rows(conn, "SELECT 'n', count(*) FROM readings")
    finally:
        conn.close()
    candidates = [v for v in (meta.get(META_LAST_SEQ), max_seq.get("max")) if v is not None]
    counters = {k: v for k, v in meta.items() if k in (META_DROPPED, META_THINNED, META_LOST)}
    return Salvage(max(candidates) if candidates else None, counters, count.get("n"))


def _try_int_rows(conn: sqlite3.Connection, sql: str) -> dict[str, int]:
    result: dict[str, int] = {}
    with contextlib.suppress(sqlite3.Error):
        for key, value in conn.execute(sql):
            if isinstance(key, str) and isinstance(value, int):
                result[key] = value
    return result


@dataclass(frozen=True)
class OpenReport:
    recovered_corrupt_file: Path | None  # where a corrupt file was moved, if it was
    message: str | None


def connect(path: Path) -> sqlite3.Connection:
    """Autocommit connection (transactions are explicit), WAL, synchronous=NORMAL, usable from
    any one thread at a time (the buffer serialises calls with its own lock)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def open_checked(path: Path, now_ms: int) -> tuple[sqlite3.Connection, OpenReport, Salvage | None]:
    """Open and check ``path``; a corrupt file is moved aside and a fresh one created.

    Returns the connection, the report for the caller, and what could be salvaged from a
    corrupt file (None when the file was fine). Raises :class:`BufferStorageError` for any
    other failure, without touching the file.
    """
    conn: sqlite3.Connection | None = None
    try:
        try:
            conn = connect(path)
            check_and_prepare(conn)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            raise CorruptDatabase(str(exc)) from exc
        return conn, OpenReport(None, None), None
    except CorruptDatabase as exc:
        if conn is not None:
            conn.close()
        return _recover(path, now_ms, str(exc))
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise BufferStorageError(path, f"cannot open: {exc}") from exc


def _recover(path: Path, now_ms: int, reason: str) -> tuple[sqlite3.Connection, OpenReport,
                                                            Salvage]:
    moved = move_aside(path, now_ms)
    found = salvage(moved)
    lost = "an unknown number of" if found.pending is None else str(found.pending)
    message = (f"buffer file was corrupt ({reason}); moved to {moved.name}, started a fresh "
               f"buffer; {lost} unconfirmed readings in it were lost")
    logger.error("telemetry buffer %s: %s", path, message)
    try:
        conn = connect(path)
        check_and_prepare(conn)
    except (sqlite3.Error, CorruptDatabase) as exc:
        raise BufferStorageError(path, f"cannot create a fresh buffer: {exc}") from exc
    return conn, OpenReport(moved, message), found
