"""Engine factory with the timeouts every database call must have.

SQLite: WAL, ``synchronous=NORMAL``, ``timeout`` (busy wait) = the statement timeout.
PostgreSQL: ``connect_timeout`` and ``statement_timeout`` on every connection; pre-ping so a
restarted server does not hand out dead pooled connections.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, statement_timeout_s: float = 5.0,
                connect_timeout_s: float = 3.0) -> sa.Engine:
    """Build (not connect) an engine; for SQLite the file's directory is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": statement_timeout_s})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, round(connect_timeout_s)),
        "options": f"-c statement_timeout={int(statement_timeout_s * 1000)}",
    }
    return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True,
                            pool_size=5, max_overflow=5, pool_timeout=connect_timeout_s)


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
