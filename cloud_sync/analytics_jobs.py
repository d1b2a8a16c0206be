"""The rollup job: claim dirty series, recompute them, until none is left; then wait.

Each replica runs one :class:`RollupWorker`. Claims are leases (see
:mod:`cloud_sync.db.analytics_store`), so replicas split the work and a replica that dies
mid-series leaves a lease that expires and is taken over; recomputing is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

from cloud_sync.db.analytics_store import RecomputeResult, SeriesKey
from cloud_sync.errors import StorageUnavailable
from cloud_sync.worker_thread import WorkerThread

log = logging.getLogger(__name__)


class RollupStore(Protocol):
    def claim(self, now_ms: int, limit: int, lease_ms: int) -> list[SeriesKey]: ...

    def recompute(self, key: SeriesKey) -> RecomputeResult: ...

    def sync_zones(self, zones: Mapping[str, str]) -> list[str]: ...


@dataclass
class RollupStats:
    """Counters for /metrics and tests; never reset."""

    rounds: int = 0
    series: int = 0
    buckets: int = 0
    requeued: int = 0  # series that got new marks while being recomputed
    db_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class RollupJob:
    """One replica's share of the rollup work (no thread: ``run_until_clean`` is synchronous)."""

    def __init__(self, store: RollupStore, *, batch: int = 50, lease_ms: int = 120_000,
                 now_ms: Callable[[], int] = _wall_ms,
                 zones: Callable[[], Mapping[str, str]] | None = None) -> None:
        """``zones`` (gateway -> IANA zone, from the registry) lets a zone change rebuild."""
        self.store = store
        self.zones = zones
        self.batch = batch
        self.lease_ms = lease_ms
        self.now_ms = now_ms
        self.stats = RollupStats()

    def run_once(self) -> int:
        """Claim up to ``batch`` series and recompute them; returns how many were claimed."""
        keys = self.store.claim(self.now_ms(), self.batch, self.lease_ms)
        for key in keys:
            result = self.store.recompute(key)
            self.stats.series += 1
            self.stats.buckets += result.buckets
            self.stats.requeued += 0 if result.cleared else 1
        self.stats.rounds += 1
        return len(keys)

    def run_until_clean(self, max_rounds: int = 1_000_000) -> int:
        """Recompute until no series is left to claim; returns the series recomputed."""
        if self.zones is not None:
            self.store.sync_zones(self.zones())
        done = 0
        for _ in range(max_rounds):
            claimed = self.run_once()
            if not claimed:
                break
            done += claimed
        return done


class RollupWorker(WorkerThread):
    """Runs the job every ``interval_s`` (and at once on :meth:`wake`); a database outage is
    retried with backoff, never fatal.

    Ingestion comes first: while ``busy()`` says telemetry is waiting to be stored (a backlog
    drain after an outage), the job waits - it would take the process's CPU from the pipeline
    that guarantees no reading is lost - for at most ``max_defer_s``, so rollups lag a drain but
    are never starved. Between rounds it checks again and yields as soon as ingestion is busy.
    """

    thread_name = "rollup-job"

    def __init__(self, job: RollupJob, interval_s: float = 30.0, *,
                 busy: Callable[[], bool] = lambda: False, max_defer_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.job = job
        self.interval_s = interval_s
        self.busy = busy
        self.max_defer_s = max_defer_s
        self.clock = clock
        self.deferrals = 0
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def _wake_for_stop(self) -> None:
        self._wake.set()

    def _idle(self) -> bool:
        """Not busy now and half a second later (a queue can be empty between two groups)."""
        return not self.busy() and not self._stop.wait(0.5) and not self.busy()

    def _defer_while_busy(self) -> bool:
        """Wait while ingestion is busy; ``True`` when the wait ran out (still busy)."""
        deadline = self.clock() + self.max_defer_s
        deferred = False
        while not self._stop.is_set() and not self._idle():
            deferred = True
            if self.clock() >= deadline:
                self.deferrals += 1
                return True
        self.deferrals += int(deferred)
        return False

    def _round(self, *, yield_to_ingest: bool) -> None:
        if self.job.zones is not None:
            self.job.store.sync_zones(self.job.zones())
        while not self._stop.is_set() and self.job.run_once():
            if yield_to_ingest and self.busy():
                break

    def _run(self) -> None:
        delay = self.interval_s
        while not self._stop.is_set():
            forced = self._defer_while_busy()
            try:
                self._round(yield_to_ingest=not forced)  # forced: catch up fully this time
                delay = self.interval_s
            except StorageUnavailable as exc:
                self.job.stats.db_failures += 1
                delay = min(max(delay, 1.0) * 2, 60.0)
                log.warning("rollup job: %s; retrying in %.0fs", exc, delay)
            self._wake.wait(delay)
            self._wake.clear()
