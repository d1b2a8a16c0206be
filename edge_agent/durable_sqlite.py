"""The agent's small durable SQLite stores (command dedup window, local shadows) open the same
way: WAL, and ``synchronous=FULL`` so a commit survives a power cut, not only a crash (a lost
commit in the dedup window would be a double actuation)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from edge_agent.errors import EdgeAgentError

__all__ = ["open_durable"]


def open_durable(path: Path, schema: Sequence[str], what: str) -> sqlite3.Connection:
    """Open (creating) ``path`` in autocommit mode for use from worker threads and run the
    ``schema`` statements. Raises ``EdgeAgentError`` naming ``what`` and the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        for statement in schema:
            db.execute(statement)
    except (OSError, sqlite3.Error) as exc:
        raise EdgeAgentError(f"cannot open {what} {path}: {exc}") from exc
    return db
