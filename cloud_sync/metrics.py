"""Prometheus metrics of the cloud service, served at ``GET /metrics``.

Each service builds its own :class:`CloudMetrics` (a private ``CollectorRegistry``, never the
global default), so tests and several services in one process never collide. Most values are
read at scrape time from the counters the workers keep anyway (``IngestStats``,
``DispatchStats``, ``AckStats``), the circuit breakers and the SQLAlchemy pool, so no hot path
does extra work. Only distributions are observed as they happen: command latency (from the
command's creation to the gateway's ack, by outcome) and HTTP request duration.

Outbox depth/age and the dead-letter backlog come from a database query per scrape (bounded
by the statement timeout and the breaker); when the database is down they are left out of the
scrape and ``homewatt_db_scrape_errors_total`` counts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import QueuePool
from starlette.middleware.base import RequestResponseEndpoint

from cloud_sync.breaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN, CircuitBreaker
from cloud_sync.db.guarded import guard_db
from cloud_sync.db.schema import commands, dead_letters, outbox
from cloud_sync.errors import StorageUnavailable
from cloud_sync.ports import StoredCommand
from protocols.commands import CommandAck

log = logging.getLogger(__name__)

BREAKER_STATES = {STATE_CLOSED: 0, STATE_HALF_OPEN: 1,
                  STATE_OPEN: 2}
# Command latency spans a publish, the gateway's execution and the ack: seconds, not ms.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Backlog:
    """What a scrape reads from the database (one short read transaction)."""

    outbox_depth: int
    outbox_oldest_ms: int | None  # created_at of the oldest command still in the outbox
    dead_letters_unreplayed: int


def read_backlog(engine: sa.Engine, breaker: CircuitBreaker) -> Backlog:
    """Outbox and dead-letter backlog; raises ``StorageUnavailable``."""
    depth_q = sa.select(sa.func.count(), sa.func.min(commands.c.created_at)).select_from(
        outbox.join(commands, commands.c.command_id == outbox.c.command_id))
    dead_q = sa.select(sa.func.count()).select_from(dead_letters).where(
        dead_letters.c.replayed_at.is_(None))

    def run() -> Backlog:
        with engine.connect() as conn:
            depth, oldest = conn.execute(depth_q).one()
            dead = conn.scalar(dead_q)
        return Backlog(int(depth or 0), None if oldest is None else int(oldest), int(dead or 0))
    return guard_db(breaker, run)


@dataclass
class CloudSources:
    """Where the collector reads from; every part is optional (tests pass what they have).

    ``*_stats`` return the workers' ``as_dict()`` counters; ``backlog`` may raise
    ``StorageUnavailable``.
    """

    ingest_stats: Callable[[], dict[str, int]] | None = None
    dispatch_stats: Callable[[], dict[str, int]] | None = None
    ack_stats: Callable[[], dict[str, int]] | None = None
    breakers: tuple[CircuitBreaker, ...] = ()
    engine: sa.Engine | None = None
    backlog: Callable[[], Backlog | None] | None = None  # None: not available yet
    broker_connected: Callable[[], bool] | None = None
    ingest_queue_depth: Callable[[], int] | None = None
    now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000


# (stats key, metric name, help) -- every one a monotonically growing counter
_INGEST = (
    ("received", "homewatt_ingest_messages_received_total", "Telemetry messages queued"),
    ("overflowed", "homewatt_ingest_messages_overflowed_total",
     "Messages refused while the ingestion queue was full (left un-acked, redelivered)"),
    ("stored_readings", "homewatt_ingest_readings_stored_total", "Readings inserted"),
    ("duplicate_readings", "homewatt_ingest_readings_duplicate_total",
     "Readings already stored (resends): acked, not inserted"),
    ("dead_lettered", "homewatt_ingest_dead_letters_total", "Telemetry messages dead-lettered"),
    ("groups", "homewatt_ingest_transactions_total", "Ingestion DB transactions committed"),
    ("db_failures", "homewatt_ingest_db_failures_total", "Ingestion transactions that failed"),
    ("acked_messages", "homewatt_ingest_messages_acked_total", "Telemetry messages PUBACKed"),
    ("ack_publish_failures", "homewatt_ingest_ack_publish_failures_total",
     "TelemetryAcks that could not be published at once (held, sent later)"),
)
_DISPATCH = (
    ("published", "homewatt_commands_published_total", "Command publishes PUBACKed"),
    ("republished", "homewatt_commands_republished_total", "Of which re-sends"),
    ("expired", "homewatt_commands_expired_total", "Commands expired without any ack"),
    ("failures", "homewatt_dispatcher_failures_total", "Dispatcher rounds that failed"),
)
_ACKS = (
    ("recorded", "homewatt_command_acks_recorded_total", "Command acks recorded"),
    ("duplicates", "homewatt_command_acks_duplicate_total", "Repeated command acks"),
    ("dead_lettered", "homewatt_command_acks_dead_letters_total", "Command acks dead-lettered"),
)


class CloudCollector(Collector):
    """Reads :class:`CloudSources` at scrape time."""

    def __init__(self, sources: CloudSources) -> None:
        self._sources = sources
        self._db_scrape_errors = 0

    def collect(self) -> Iterable[Metric]:
        s = self._sources
        yield from _counters(s.ingest_stats, _INGEST)
        yield from _counters(s.dispatch_stats, _DISPATCH)
        yield from _counters(s.ack_stats, _ACKS)
        yield from self._breakers()
        yield from self._pool()
        yield from self._backlog()
        if s.broker_connected is not None:
            yield GaugeMetricFamily("homewatt_broker_connected",
                                    "1 when the ingestion MQTT session is up",
                                    value=int(s.broker_connected()))
        if s.ingest_queue_depth is not None:
            yield GaugeMetricFamily("homewatt_ingest_queue_depth",
                                    "Received telemetry messages not yet stored",
                                    value=s.ingest_queue_depth())

    def _breakers(self) -> Iterator[Metric]:
        if not self._sources.breakers:
            return
        state = GaugeMetricFamily("homewatt_circuit_breaker_state",
                                  "0 closed, 1 half-open, 2 open", labels=["breaker"])
        for breaker in self._sources.breakers:
            state.add_metric([str(breaker.name)],
                             BREAKER_STATES.get(str(breaker.current_state), 2))
        yield state

    def _pool(self) -> Iterator[Metric]:
        engine = self._sources.engine
        if engine is None or not isinstance(engine.pool, QueuePool):
            return
        pool = engine.pool
        yield GaugeMetricFamily("homewatt_db_pool_checked_out_connections",
                                "Connections in use", value=pool.checkedout())
        yield GaugeMetricFamily("homewatt_db_pool_size_connections",
                                "Configured pool size (overflow comes on top)", value=pool.size())
        yield GaugeMetricFamily("homewatt_db_pool_overflow_connections",
                                "Connections beyond the pool size (negative: unused slots)",
                                value=pool.overflow())

    def _backlog(self) -> Iterator[Metric]:
        if self._sources.backlog is None:
            return
        try:
            backlog = self._sources.backlog()
        except StorageUnavailable as exc:
            self._db_scrape_errors += 1
            log.debug("metrics scrape without DB backlog: %s", exc)
            backlog = None
        else:
            if backlog is None:  # not migrated yet: nothing to report, nothing failed
                return
        yield CounterMetricFamily("homewatt_db_scrape_errors",
                                  "Scrapes whose backlog query failed",
                                  value=self._db_scrape_errors)
        if backlog is None:
            return
        yield GaugeMetricFamily("homewatt_outbox_depth_commands",
                                "Commands in the outbox (not yet acked or expired)",
                                value=backlog.outbox_depth)
        age = 0.0
        if backlog.outbox_oldest_ms is not None:
            age = max(0.0, (self._sources.now_ms() - backlog.outbox_oldest_ms) / 1000)
        yield GaugeMetricFamily("homewatt_outbox_oldest_age_seconds",
                                "Age of the oldest command in the outbox (0 when empty)",
                                value=age)
        yield GaugeMetricFamily("homewatt_dead_letters_unreplayed",
                                "Dead letters not replayed (all kinds)",
                                value=backlog.dead_letters_unreplayed)


def _counters(read: Callable[[], dict[str, int]] | None,
              table: tuple[tuple[str, str, str], ...]) -> Iterator[Metric]:
    if read is None:
        return
    values = read()
    for key, name, text in table:
        # CounterMetricFamily appends the _total suffix itself
        yield CounterMetricFamily(name.removesuffix("_total"), text, value=values.get(key, 0))


class CloudMetrics:
    """One service's registry: the scrape-time collector plus the observed histograms."""

    def __init__(self, sources: CloudSources | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sources = sources or CloudSources()
        self.registry.register(CloudCollector(self.sources))
        self.command_latency = Histogram(
            "homewatt_command_latency_seconds",
            "From a command's creation to its gateway ack being recorded, by outcome",
            ["outcome"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.http_requests = Histogram(
            "homewatt_http_request_duration_seconds",
            "REST requests by route template, method and status code",
            ["route", "method", "code"], buckets=HTTP_BUCKETS, registry=self.registry)

    def observe_command_ack(self, ack: CommandAck, created_at_ms: int, now_ms: int) -> None:
        """Record one recorded ack's latency (never negative: clocks may disagree)."""
        latency = max(0.0, (now_ms - created_at_ms) / 1000)
        self.command_latency.labels(outcome=ack.outcome.value).observe(latency)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CommandLookup(Protocol):
    def command_by_id(self, command_id: str) -> StoredCommand | None: ...


def command_latency_observer(metrics: CloudMetrics, store: CommandLookup,
                             ) -> Callable[[CommandAck, int], None]:
    """The ``CommandAckWorker.on_recorded`` hook: looks the command up for its creation time.

    Never raises: if the database fails, this one observation is skipped (logged at debug).
    """
    def observe(ack: CommandAck, now_ms: int) -> None:
        try:
            # the ack names the device by its gateway-local id: look the command up by its id
            command = store.command_by_id(ack.command_id)
        except StorageUnavailable as exc:
            log.debug("command latency of %s not observed: %s", ack.command_id, exc)
            return
        if command is not None:
            metrics.observe_command_ack(ack, command.created_at, now_ms)
    return observe


def backlog_checks(backlog: Callable[[], Backlog | None], dead_letters_max: int,
                   queue_depth: Callable[[], int], queue_size: int,
                   ) -> dict[str, Callable[[], str]]:
    """Non-critical readiness checks (``HealthChecks.optional``): a dead-letter backlog over
    ``dead_letters_max`` and an ingestion queue over 90 % full (acks lagging) make ``/readyz``
    report ``degraded``; they never take the service out of rotation."""
    def dead_letters() -> str:
        current = backlog()
        if current is None or current.dead_letters_unreplayed <= dead_letters_max:
            return "ok"
        return (f"{current.dead_letters_unreplayed} unreplayed dead letters "
                f"(more than {dead_letters_max})")

    def ingest_queue() -> str:
        depth = queue_depth()
        if depth * 10 < queue_size * 9:
            return "ok"
        return f"ingestion queue {depth}/{queue_size}: storing lags behind receiving"
    return {"dead_letters": dead_letters, "ingest_queue": ingest_queue}


def mount_metrics(app: FastAPI, metrics: CloudMetrics) -> None:
    """``GET /metrics`` (Prometheus text format) and per-request timing of every route.

    Unmatched paths are labelled ``route="unmatched"`` so a scanner cannot blow up the
    label cardinality.
    """
    @app.middleware("http")
    async def time_requests(request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        code = "500"  # an exception escaping the app becomes a 500 for the client too
        try:
            response = await call_next(request)
            code = str(response.status_code)
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            if route != "/metrics":
                metrics.http_requests.labels(route=route, method=request.method,
                                             code=code).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    def scrape() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)


__all__ = ["Backlog", "CloudCollector", "CloudMetrics", "CloudSources", "backlog_checks",
           "command_latency_observer", "mount_metrics", "read_backlog"]
