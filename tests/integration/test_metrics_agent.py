"""The agent's local health port over real HTTP: metrics after a known workload, degraded
readiness while offline, and liveness failing after readiness failed longer than the window."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.clock import FakeClock
from edge_agent.config import AgentConfig
from edge_agent.health_server import AgentHealthServer, LivenessWindow, Probe
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from edge_agent.uplink import FakeUplink
from protocols.models import MeterHealth, Reading, Unit
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GW = "gw-metrics"
NOW_MS = 1_764_000_000_000


HEALTH = {"grid": MeterHealth(state="ok"),
          "pv": MeterHealth(state="offline", consecutive_failures=4)}


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_show_the_buffer_depth_after_appending_readings(tmp_path: Path) -> None:
    port = free_port()
    config = AgentConfig(gateway_id=GW, data_dir=tmp_path, health_port=port)
    clock = FakeClock(NOW_MS)
    # offline: nothing drains, so the buffer holds exactly what was appended
    agent = Agent(config, uplink=FakeUplink(connect_on_start=False), clock=clock,
                  poller=functools.partial(FakePoller, health=HEALTH))
    await agent.start()
    try:
        await agent.ingest([Reading(meter_id="grid", channel="power_w", value=float(i),
                                    unit=Unit.WATT, ts=NOW_MS + i) for i in range(25)])
        clock.advance(90)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            scrape = await client.get("/metrics")
            ready = await client.get("/readyz")
            live = await client.get("/livez")
            missing = await client.get("/nope")
    finally:
        await agent.stop()

    assert scrape.status_code == 200
    got = values(scrape.text)
    gw = (("gateway", GW),)
    assert got[("homewatt_agent_buffer_depth_readings", gw)] == 25
    assert got[("homewatt_agent_buffer_oldest_unsent_age_seconds", gw)] == pytest.approx(90)
    assert got[("homewatt_agent_buffer_dropped_readings_total", gw)] == 0
    assert got[("homewatt_agent_uplink_connected", gw)] == 0
    assert got[("homewatt_agent_commands_executed_total", gw)] == 0
    assert got[("homewatt_agent_meter_state", (("gateway", GW), ("meter", "pv")))] == 2
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["degraded"] == ["meters", "uplink"]
    assert live.status_code == 200
    assert missing.status_code == 404


async def test_livez_fails_once_readiness_failed_longer_than_a_short_window() -> None:
    failing = Probe({"buffer": "disk I/O error"}, {})
    server = AgentHealthServer(_probe_returning(failing), lambda: b"",
                               liveness=LivenessWindow(0.2))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            first = await client.get("/livez")
            ready = await client.get("/readyz")
            deadline = time.monotonic() + 10
            while (live := await client.get("/livez")).status_code == 200:
                assert time.monotonic() < deadline, "/livez never failed"
                await asyncio.sleep(0.05)
    finally:
        await server.stop()

    assert first.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["detail"] == "buffer: disk I/O error"
    assert live.status_code == 503
    assert "not ready for" in live.json()["detail"]


def _probe_returning(probe: Probe) -> Callable[[], Awaitable[Probe]]:
    async def run() -> Probe:
        return probe
    return run
