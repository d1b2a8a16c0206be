"""Agent metrics from known events: per-meter read latency and errors observed by the
poller, command counters and buffer stats read at scrape time."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.clock import FakeClock
from edge_agent.errors import EdgeAgentError
from edge_agent.metrics import AgentMetrics, AgentSources
from edge_agent.scheduler import MeterPoller
from protocols.models import Reading

GW = "gw-1"


def values(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class SlowSource:
    """Takes ``seconds`` of (fake) time per read; fails when ``fail`` is set."""

    def __init__(self, meter_id: str, clock: FakeClock, seconds: float) -> None:
        self.meter_id = meter_id
        self.last_error: str | None = None
        self.fail = False
        self._clock = clock
        self._seconds = seconds

    async def read(self) -> list[Reading]:
        self._clock.advance(self._seconds)
        self.last_error = "timeout" if self.fail else None
        return []


async def noop(_readings: list[Reading]) -> None:
    pass


async def test_per_meter_read_latency_and_errors_are_counted() -> None:
    clock = FakeClock()
    metrics = AgentMetrics(GW)
    grid, pv = SlowSource("grid", clock, 0.04), SlowSource("pv", clock, 0.8)
    poller = MeterPoller([(grid, 5.0), (pv, 5.0)], noop, clock,
                         read_observer=metrics.observe_read, random=lambda: 0.0)
    for _ in range(3):
        await poller.poll("grid")
        clock.advance(5)
    pv.fail = True
    await poller.poll("pv")
    clock.advance(60)
    pv.fail = False
    await poller.poll("pv")

    got = values(metrics)
    grid_l, pv_l = (("gateway", GW), ("meter", "grid")), (("gateway", GW), ("meter", "pv"))
    assert got[("homewatt_agent_meter_read_duration_seconds_count", grid_l)] == 3
    assert got[("homewatt_agent_meter_read_duration_seconds_sum", grid_l)] == pytest.approx(0.12)
    assert got[("homewatt_agent_meter_read_duration_seconds_bucket",
                (*grid_l[:1], ("le", "0.05"), grid_l[1]))] == 3
    assert got[("homewatt_agent_meter_read_duration_seconds_count", pv_l)] == 2
    assert got[("homewatt_agent_meter_read_errors_total", pv_l)] == 1
    assert got[("homewatt_agent_meter_read_errors_total", grid_l)] == 0


@dataclass
class Stats:
    depth: int = 0
    oldest_ts_ms: int | None = None
    dropped_total: int = 0


def test_scrape_reads_buffer_and_command_counters_and_survives_a_broken_buffer() -> None:
    clock = FakeClock(1_000_000)
    stats: Stats | None = Stats(depth=7, oldest_ts_ms=1_000_000 - 30_000, dropped_total=2)

    def buffer_stats() -> Stats:
        if stats is None:
            raise EdgeAgentError("database disk image is malformed")
        return stats
    metrics = AgentMetrics(GW, AgentSources(
        buffer_stats=buffer_stats, uplink_connected=lambda: True,
        command_counters=lambda: {"executed": 4, "deduplicated": 2},
        error_counters=lambda: {"storage_errors": 1}, now_ms=clock.now_ms))
    gw = (("gateway", GW),)

    got = values(metrics)
    assert got[("homewatt_agent_buffer_depth_readings", gw)] == 7
    assert got[("homewatt_agent_buffer_oldest_unsent_age_seconds", gw)] == 30
    assert got[("homewatt_agent_buffer_dropped_readings_total", gw)] == 2
    assert got[("homewatt_agent_uplink_connected", gw)] == 1
    assert got[("homewatt_agent_commands_executed_total", gw)] == 4
    assert got[("homewatt_agent_commands_deduplicated_total", gw)] == 2
    assert got[("homewatt_agent_buffer_write_errors_total", gw)] == 1

    stats = None
    got = values(metrics)
    assert ("homewatt_agent_buffer_depth_readings", gw) not in got
    assert got[("homewatt_agent_buffer_scrape_errors_total", gw)] == 1
    assert got[("homewatt_agent_commands_executed_total", gw)] == 4
