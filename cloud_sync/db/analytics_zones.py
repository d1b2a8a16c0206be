"""Each gateway's time zone: its home's (registry revision 0004); UTC while it has none."""

from __future__ import annotations

import threading
import time
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cloud_sync.analytics import calendar
from cloud_sync.db.store import DB_ERRORS
from cloud_sync.errors import StorageUnavailable

_QUERY = sa.text("SELECT g.id, h.timezone FROM gateways g JOIN homes h ON h.id = g.home_id")


class GatewayZones:
    """``zones()`` maps gateways to IANA names (for ``RollupJob``); calling it with a gateway
    gives its ``ZoneInfo`` (for ``SqlRollupStore``). Read at most every ``ttl_s``, so the job
    and the writer agree on one snapshot per round. A database failure is
    ``StorageUnavailable``, which the rollup job retries (raw, it killed the job's thread)."""

    def __init__(self, engine: sa.Engine, ttl_s: float = 30.0) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        self._read_at = float("-inf")

    def zones(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl_s:
                try:
                    with self.engine.connect() as conn:
                        self._names = {str(g): str(tz) for g, tz in conn.execute(_QUERY)}
                except DB_ERRORS as exc:
                    raise StorageUnavailable(f"reading time zones failed: {exc}",
                                             retry_after_s=1.0) from exc
                self._read_at = time.monotonic()
            return dict(self._names)

    def __call__(self, gateway_id: str) -> ZoneInfo:
        name = self._names.get(gateway_id) or self.zones().get(gateway_id, "UTC")
        return calendar.zone(name)
