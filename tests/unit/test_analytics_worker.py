"""The rollup worker yields to ingestion: while telemetry waits, rollups wait (bounded)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from cloud_sync.analytics_jobs import RollupJob, RollupWorker
from cloud_sync.db.analytics_store import RecomputeResult, SeriesKey


class FakeRollupStore:
    """Two dirty series; records when each recompute happened."""

    def __init__(self) -> None:
        self.dirty: list[SeriesKey] = [("gw", "m", "energy_import"), ("gw", "m", "power")]
        self.recomputed: list[SeriesKey] = []
        self.done = threading.Event()

    def claim(self, now_ms: int, limit: int, lease_ms: int) -> list[SeriesKey]:
        taken, self.dirty = self.dirty[:1], self.dirty[1:]
        return taken

    def recompute(self, key: SeriesKey) -> RecomputeResult:
        self.recomputed.append(key)
        if not self.dirty:
            self.done.set()
        return RecomputeResult(key, 1, 4, True)

    def sync_zones(self, zones: Mapping[str, str]) -> list[str]:
        return []


def test_rollups_wait_while_ingestion_is_busy_then_run() -> None:
    store = FakeRollupStore()
    busy = threading.Event()
    busy.set()
    worker = RollupWorker(RollupJob(store), interval_s=60, busy=busy.is_set, max_defer_s=30)
    worker.start()
    try:
        assert not store.done.wait(0.8)  # ingestion busy: nothing recomputed
        assert store.recomputed == []
        busy.clear()
        assert store.done.wait(5)
        assert len(store.recomputed) == 2 and worker.deferrals == 1
    finally:
        worker.stop()


def test_a_busy_ingestion_cannot_starve_rollups_forever() -> None:
    store = FakeRollupStore()
    worker = RollupWorker(RollupJob(store), interval_s=60, busy=lambda: True, max_defer_s=1.0)
    worker.start()
    try:
        assert store.done.wait(10)  # deferred at most max_defer_s, then one series a round
    finally:
        worker.stop()
