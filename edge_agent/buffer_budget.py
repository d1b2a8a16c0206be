"""Applies the disk-budget policy of :mod:`edge_agent.buffer_policy` to the buffer's database.

Every removal runs in its own transaction together with the update of the persistent counters,
so a crash between the two can never lose or double-count a removal.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from edge_agent.buffer_policy import BudgetEpisode, rows_to_drop, target_bytes, thin_window
from edge_agent.buffer_schema import (
    META_DROPPED,
    META_LOST,
    META_THINNED,
    UPSERT_META,
    BufferStorageError,
)

logger = logging.getLogger(__name__)

# Keep the last reading that has a value in each (stream, bucket); remove the others.
_THIN = (
    "DELETE FROM readings WHERE seq IN (SELECT seq FROM ("
    " SELECT seq, row_number() OVER (PARTITION BY stream, ts / :bucket_ms"
    "  ORDER BY value IS NULL, ts DESC, seq DESC) AS rank"
    " FROM readings WHERE seq <= :cutoff) WHERE rank > 1)"
)
_DROP = "DELETE FROM readings WHERE seq <= :cutoff"
_MAX_DROP_ROUNDS = 8


class DiskBudget:
    """Holds the persistent policy counters and the current 'full' episode of one buffer.

    The caller holds the buffer's lock and passes its connection (outside a transaction).
    """

    def __init__(self, path: Path, *, max_bytes: int, bucket_ms: int) -> None:
        self._path = path
        self._max_bytes = max_bytes
        self._bucket_ms = bucket_ms
        self._page_size = 4096
        self._episode = BudgetEpisode()
        self.counters = {META_DROPPED: 0, META_THINNED: 0, META_LOST: 0}

    def load(self, conn: sqlite3.Connection, counters: dict[str, int]) -> None:
        self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        self.counters = dict(counters)

    def used_bytes(self, conn: sqlite3.Connection) -> int:
        """Pages in use (not free-listed) times the page size: O(1), read from the header."""
        pages: int = conn.execute("SELECT page_count - freelist_count FROM pragma_page_count(), "
                                  "pragma_freelist_count()").fetchone()[0]
        return pages * self._page_size

    def enforce(self, conn: sqlite3.Connection, depth: int) -> int:
        """If over budget, thin then drop; return how many readings were removed."""
        used = self.used_bytes(conn)
        if used <= self._max_bytes:
            return 0
        target = target_bytes(self._max_bytes)
        thinned = self._thin_oldest(conn, depth)
        depth -= thinned
        used = self.used_bytes(conn)
        dropped = 0
        for _ in range(_MAX_DROP_ROUNDS):
            count = rows_to_drop(used, target, depth)
            if count == 0:
                break
            removed = self._drop_oldest(conn, count)
            dropped += removed
            depth -= removed
            used = self.used_bytes(conn)
        if self._episode.record(thinned, dropped):
            logger.warning(
                "telemetry buffer %s is full (budget %d bytes): thinned %d old readings to one "
                "per %d min per channel and dropped the %d oldest; counted as dropped readings "
                "in the gateway status", self._path, self._max_bytes, thinned,
                self._bucket_ms // 60_000, dropped)
        return thinned + dropped

    def end_episode(self) -> None:
        """The cloud confirmed readings: the next policy action logs a new warning."""
        totals = self._episode.end()
        if totals is not None:
            logger.info("telemetry buffer %s is draining again; this full episode thinned %d "
                        "and dropped %d readings", self._path, *totals)

    def _thin_oldest(self, conn: sqlite3.Connection, depth: int) -> int:
        cutoff = _nth_oldest_seq(conn, thin_window(depth))
        if cutoff is None:
            return 0
        return self._remove(conn, _THIN, {"bucket_ms": self._bucket_ms, "cutoff": cutoff},
                            thinned=True)

    def _drop_oldest(self, conn: sqlite3.Connection, count: int) -> int:
        cutoff = _nth_oldest_seq(conn, count)
        if cutoff is None:
            return 0
        return self._remove(conn, _DROP, {"cutoff": cutoff}, thinned=False)

    def _remove(self, conn: sqlite3.Connection, sql: str, params: dict[str, int], *,
                thinned: bool) -> int:
        counters = dict(self.counters)
        try:
            conn.execute("BEGIN IMMEDIATE")
            removed: int = conn.execute(sql, params).rowcount
            counters[META_DROPPED] += removed
            if thinned:
                counters[META_THINNED] += removed
            conn.executemany(UPSERT_META, list(counters.items()))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise BufferStorageError(self._path, f"budget policy failed: {exc}") from exc
        self.counters = counters
        return removed


def _nth_oldest_seq(conn: sqlite3.Connection, n: int) -> int | None:
    """The seq of the n-th oldest stored reading (or the newest if fewer are stored)."""
    if n <= 0:
        return None
    row = conn.execute("SELECT seq FROM readings ORDER BY seq LIMIT 1 OFFSET ?",
                       (n - 1,)).fetchone()
    if row is None:
        row = conn.execute("SELECT max(seq) FROM readings").fetchone()
    return None if row is None or row[0] is None else int(row[0])
