"""Prometheus metrics of one agent, served on its local health port (``GET /metrics``).

Each :class:`~edge_agent.runtime.Agent` owns an :class:`AgentMetrics` with a private
``CollectorRegistry`` (several in-process agents, as in the fleet runner and the tests, never
collide). Buffer depth, oldest unsent age, drops, uplink state and command counters are read
at scrape time from the objects that keep them anyway; only per-meter read latency and read
errors are observed as they happen (the poller calls :meth:`AgentMetrics.observe_read`).

Every metric carries a ``gateway`` label so one Prometheus can scrape a fleet.
Rendering calls the buffer's ``stats()`` (a short SQLite read): call :meth:`render` off the
event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_agent.errors import EdgeAgentError
from edge_agent.status import BufferStatsView
from protocols.models import MeterHealth

log = logging.getLogger(__name__)

# A Modbus read is a few ms on TCP, up to the timeout (default 1 s) on a silent RS485 device.
READ_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
METER_STATES = {"ok": 0, "degraded": 1, "offline": 2}

# (counter key, metric name without _total, help)
_COMMANDS = (
    ("executed", "homewatt_agent_commands_executed", "Commands executed (actuated once)"),
    ("deduplicated", "homewatt_agent_commands_deduplicated",
     "Redelivered commands answered from the dedup window, not re-executed"),
    ("rejected", "homewatt_agent_commands_rejected", "Commands refused (interlocks, bad target)"),
    ("expired", "homewatt_agent_commands_expired", "Commands that arrived after expiry"),
    ("failed", "homewatt_agent_commands_failed", "Commands whose actuation failed"),
    ("unknown", "homewatt_agent_commands_unknown",
     "Commands interrupted by a restart (outcome read back, not retried)"),
    ("invalid", "homewatt_agent_commands_invalid", "Undecodable command messages"),
    ("dropped", "homewatt_agent_commands_dropped", "Commands dropped on a full queue"),
)
_ERRORS = (
    ("storage_errors", "homewatt_agent_buffer_write_errors",
     "Poll results that could not be written to the buffer"),
    ("invalid_acks", "homewatt_agent_invalid_telemetry_acks", "Undecodable telemetry acks"),
)


@dataclass
class AgentSources:
    """Where the collector reads from; ``None`` parts are left out of the scrape."""

    buffer_stats: Callable[[], BufferStatsView] | None = None  # may raise EdgeAgentError
    uplink_connected: Callable[[], bool] | None = None
    command_counters: Callable[[], Mapping[str, int] | None] | None = None
    error_counters: Callable[[], Mapping[str, int]] | None = None
    meter_health: Callable[[], Mapping[str, MeterHealth]] | None = None
    now_ms: Callable[[], int] = field(default=lambda: 0)


class AgentCollector(Collector):
    def __init__(self, gateway_id: str, sources: AgentSources) -> None:
        self._gateway = gateway_id
        self._sources = sources
        self._scrape_errors = 0

    def _gauge(self, name: str, text: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, text, labels=["gateway"])
        family.add_metric([self._gateway], value)
        return family

    def _counter(self, name: str, text: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, text, labels=["gateway"])
        family.add_metric([self._gateway], value)
        return family

    def collect(self) -> Iterable[Metric]:
        s = self._sources
        yield from self._buffer()
        if s.uplink_connected is not None:
            yield self._gauge("homewatt_agent_uplink_connected",
                              "1 while the MQTT connection to the cloud broker is up",
                              int(s.uplink_connected()))
        if s.command_counters is not None and (counters := s.command_counters()) is not None:
            for key, name, text in _COMMANDS:
                yield self._counter(name, text, counters.get(key, 0))
        if s.error_counters is not None:
            errors = s.error_counters()
            for key, name, text in _ERRORS:
                yield self._counter(name, text, errors.get(key, 0))
        yield from self._meters()

    def _buffer(self) -> Iterator[Metric]:
        if self._sources.buffer_stats is None:
            return
        try:
            stats = self._sources.buffer_stats()
        except EdgeAgentError as exc:
            self._scrape_errors += 1
            log.debug("metrics scrape without buffer stats: %s", exc)
            stats = None
        yield self._counter("homewatt_agent_buffer_scrape_errors",
                            "Scrapes that could not read the buffer", self._scrape_errors)
        if stats is None:
            return
        yield self._gauge("homewatt_agent_buffer_depth_readings",
                          "Readings waiting for the cloud's stored-ack", stats.depth)
        age = 0.0
        if stats.depth > 0 and stats.oldest_ts_ms is not None:
            age = max(0.0, (self._sources.now_ms() - stats.oldest_ts_ms) / 1000)
        yield self._gauge("homewatt_agent_buffer_oldest_unsent_age_seconds",
                          "Age of the oldest unconfirmed reading (0 when the buffer is empty)",
                          age)
        yield self._counter("homewatt_agent_buffer_dropped_readings",
                            "Readings lost unconfirmed (thinned or dropped when full, or lost "
                            "in corruption recovery)", stats.dropped_total)
        yield self._gauge("homewatt_agent_buffer_unsynced_readings",
                          "Readings held back until the clock is synced (no RTC)",
                          getattr(stats, "held_unsynced", 0))

    def _meters(self) -> Iterator[Metric]:
        if self._sources.meter_health is None:
            return
        family = GaugeMetricFamily("homewatt_agent_meter_state",
                                   "0 ok, 1 degraded, 2 offline", labels=["gateway", "meter"])
        for meter_id, health in self._sources.meter_health().items():
            family.add_metric([self._gateway, meter_id], METER_STATES.get(health.state, 2))
        yield family


class AgentMetrics:
    """One agent's registry: the scrape-time collector plus per-meter read observations."""

    def __init__(self, gateway_id: str, sources: AgentSources | None = None) -> None:
        self.gateway_id = gateway_id
        self.sources = sources or AgentSources()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(AgentCollector(gateway_id, self.sources))
        self.read_duration = Histogram(
            "homewatt_agent_meter_read_duration_seconds",
            "Time to read one meter (all its channels), successful or not",
            ["gateway", "meter"], buckets=READ_BUCKETS, registry=self.registry)
        self.read_errors = Counter(
            "homewatt_agent_meter_read_errors", "Meter reads that failed",
            ["gateway", "meter"], registry=self.registry)

    def observe_read(self, meter_id: str, seconds: float, ok: bool) -> None:
        """The poller's hook: one poll that reached the device."""
        self.read_duration.labels(self.gateway_id, meter_id).observe(max(0.0, seconds))
        errors = self.read_errors.labels(self.gateway_id, meter_id)
        if not ok:
            errors.inc()

    def render(self) -> bytes:
        """Prometheus text format 0.0.4 (blocking: the buffer is read)."""
        return generate_latest(self.registry)


__all__ = ["AgentCollector", "AgentMetrics", "AgentSources"]
