"""Database calls with one behaviour everywhere: through the breaker, errors translated.

``guard_db`` runs a call through the database's circuit breaker and turns database trouble
into :class:`~cloud_sync.errors.StorageUnavailable` (503 + Retry-After at the API, a retry in
the workers). :class:`GuardedStore` gives a store ``_read`` / ``_write`` that open a
connection (or a transaction) and guard it, so each query method is a few lines of SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from cloud_sync.breaker import CircuitBreaker, CircuitOpen
from cloud_sync.db.store import DB_ERRORS
from cloud_sync.errors import StorageUnavailable

T = TypeVar("T")


def guard_db(breaker: CircuitBreaker, func: Callable[[], T]) -> T:
    """Run ``func`` through the breaker; database trouble becomes ``StorageUnavailable``."""
    retry_after = float(breaker.reset_timeout)
    try:
        return breaker.call(func)
    except CircuitOpen as exc:
        raise StorageUnavailable("database circuit open: recent calls failed",
                                 retry_after_s=retry_after) from exc
    except DB_ERRORS as exc:
        text = str(getattr(exc, "orig", None) or exc).splitlines()
        raise StorageUnavailable(f"database error: {text[0] if text else exc}",
                                 retry_after_s=retry_after) from exc


class GuardedStore:
    """Shares the engine and the database circuit breaker with the other stores."""

    def __init__(self, engine: sa.Engine, breaker: CircuitBreaker) -> None:
        self.engine = engine
        self.breaker = breaker

    def _read(self, func: Callable[[sa.Connection], T]) -> T:
        def run() -> T:
            with self.engine.connect() as conn:
                return func(conn)
        return guard_db(self.breaker, run)

    def _write(self, func: Callable[[sa.Connection], T]) -> T:
        """``func`` runs in one transaction, committed when it returns."""
        def run() -> T:
            with self.engine.begin() as conn:
                return func(conn)
        return guard_db(self.breaker, run)
