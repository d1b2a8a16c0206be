"""``SqliteShadowStore``: the agent's local shadows, one row per actuator, in SQLite.

Beside the dedup window (``<data_dir>/shadow.sqlite``), WAL with ``synchronous=FULL`` like
the other stores: a request's version must be on disk before its command runs (it is part of
the command id; losing it could run a delta twice), and a reported state must survive a
power cut until the cloud has it. Each save writes the whole row (a few hundred bytes).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from edge_agent.durable_sqlite import open_durable
from edge_agent.errors import EdgeAgentError
from edge_agent.shadow_local import DesiredRequest, LocalShadow

__all__ = ["SqliteShadowStore"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS shadows ("
    " name TEXT PRIMARY KEY, reported TEXT NOT NULL, report_pending INTEGER NOT NULL,"
    " version INTEGER, desired TEXT NOT NULL, requests TEXT NOT NULL)")


def _requests_json(shadow: LocalShadow) -> str:
    return json.dumps({k: {"value": r.value, "ts": r.ts, "version": r.version,
                           "handled": r.handled} for k, r in shadow.requests.items()})


def _requests(text: str) -> dict[str, DesiredRequest]:
    raw: dict[str, Any] = json.loads(text)
    return {k: DesiredRequest(v["value"], v["ts"], int(v["version"]), bool(v["handled"]))
            for k, v in raw.items()}


class SqliteShadowStore:
    """Thread-safe; each call blocks on at most one fsync (use ``asyncio.to_thread``).
    Raises ``EdgeAgentError`` when the file cannot be opened, read or written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        self._db = open_durable(self.path, [_SCHEMA], "shadow store")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def load(self) -> dict[str, LocalShadow]:
        try:
            with self._lock:
                rows = self._require().execute(
                    "SELECT name, reported, report_pending, version, desired, requests "
                    "FROM shadows").fetchall()
            return {str(name): LocalShadow(
                name=str(name), reported=json.loads(reported), report_pending=bool(pending),
                version=None if version is None else int(version),
                desired=json.loads(desired), requests=_requests(requests))
                for name, reported, pending, version, desired, requests in rows}
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            raise EdgeAgentError(f"shadow store {self.path} unreadable: {exc}") from exc

    def save(self, shadow: LocalShadow) -> None:
        try:
            with self._lock:
                self._require().execute(
                    "INSERT OR REPLACE INTO shadows (name, reported, report_pending, version, "
                    "desired, requests) VALUES (?, ?, ?, ?, ?, ?)",
                    (shadow.name, json.dumps(shadow.reported), int(shadow.report_pending),
                     shadow.version, json.dumps(shadow.desired), _requests_json(shadow)))
        except sqlite3.Error as exc:
            raise EdgeAgentError(f"shadow store {self.path}: {exc}") from exc

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise EdgeAgentError(f"shadow store {self.path} is not open")
        return self._db
