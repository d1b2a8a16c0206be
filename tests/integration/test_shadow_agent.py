"""The agent's shadows against the real cloud shadow service through a real Mosquitto (paho):
desired set by REST switches the actuator, is reported and cleared; desired changed while the
agent is away is executed exactly once when it comes back, also when the agent was SIGKILLed
between actuation and its outcome (a real agent process on the Modbus simulator)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.bootstrap import CloudService
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import make_db_breaker
from edge_agent.actuators import FakeActuator
from edge_agent.config import AgentConfig
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from protocols import shadow
from protocols.commands import Action
from simulator import MeterSimulator
from tests.integration.conftest_cloud import (
    api_client,
    cloud_settings,
    register,
    shadows_of,
    started,
    until,
)
from tests.integration.water_heater_agent import (
    AGENT_TOML,
    WATER_HEATER_UNIT,
    agent_process,
    simulator,  # noqa: F401 - a fixture, used as an argument
    switch_writes,
)
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GW = "gw-shadow"
MQTT = {"keepalive_s": 5, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}


@pytest.fixture
def cloud(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[CloudService]:
    settings = cloud_settings(f"sqlite:///{tmp_path / 'cloud.sqlite'}", mosquitto,
                              tmp_path / "cloud")
    register(settings, GW)
    service = started(settings)
    registry = SqlRegistryStore(service.engine, make_db_breaker(3, 1.0))
    for device in ("boiler", "waterheater"):
        registry.add_device(GW, device, 0, kind="actuator",
                            capabilities=["switch_on", "switch_off"])
    try:
        yield service
    finally:
        service.stop()


def cloud_shadow(service: CloudService, name: str) -> shadow.ShadowDocument:
    return shadows_of(service).store.get(GW, name)


def settled_at(service: CloudService, name: str, state: str) -> Callable[[], bool]:
    """The cloud shadow reports ``state`` and has no desired state left."""
    def check() -> bool:
        doc = cloud_shadow(service, name)
        return (doc.reported or {}).get("state") == state and not doc.desired
    return check


async def patch_desired(service: CloudService, device: str, desired: dict[str, Any]) -> None:
    async with api_client(service) as api:
        reply = await api.patch(f"/api/v1/devices/{GW}.{device}/shadow",
                                json={"desired": desired})
        assert reply.status_code == 200, reply.text


def agent_config(tmp_path: Path, broker: Mosquitto) -> AgentConfig:
    return AgentConfig(gateway_id=GW, data_dir=tmp_path / "agent",
                       mqtt={"url": broker.url, **MQTT},
                       actuators=[{"id": "boiler", "kind": "relay", "pin": 17}])


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig, boiler: FakeActuator) -> AsyncIterator[Agent]:
    agent = Agent(config, poller=FakePoller, actuators={"boiler": boiler})
    await agent.start()
    try:
        await asyncio.wait_for(agent.uplink.wait_connected(), 15)
        yield agent
    finally:
        await agent.stop()


async def test_desired_set_by_rest_switches_the_actuator_is_reported_and_cleared(
        tmp_path: Path, mosquitto: Mosquitto, cloud: CloudService) -> None:
    boiler = FakeActuator("boiler")
    async with running_agent(agent_config(tmp_path, mosquitto), boiler) as agent:
        await until(lambda: agent.shadow is not None and agent.shadow.synced, 15,
                    "the first sync")
        await patch_desired(cloud, "boiler", {"state": "on"})
        await until(settled_at(cloud, "boiler", "on"), 15, "boiler reported on")
        await patch_desired(cloud, "boiler", {"state": "off"})
        await until(settled_at(cloud, "boiler", "off"), 15, "boiler reported off")
    assert boiler.applied == [(Action.SWITCH_ON, {}), (Action.SWITCH_OFF, {})]
    last = (cloud_shadow(cloud, "boiler").reported or {})["last_command"]
    assert last["outcome"] == "executed" and last["id"].startswith("shadow-")


async def test_desired_changed_while_the_agent_is_away_runs_exactly_once_on_its_return(
        tmp_path: Path, mosquitto: Mosquitto, cloud: CloudService) -> None:
    config = agent_config(tmp_path, mosquitto)
    boiler = FakeActuator("boiler")
    async with running_agent(config, boiler) as agent:
        await until(lambda: agent.shadow is not None and agent.shadow.synced, 15,
                    "the first sync")
    await patch_desired(cloud, "boiler", {"state": "off"})  # the app changes its mind...
    await patch_desired(cloud, "boiler", {"state": "on"})  # ...while the gateway is away
    async with running_agent(config, boiler) as agent:
        await until(settled_at(cloud, "boiler", "on"), 20, "boiler reported on")
        assert agent.commands is not None
        counters = agent.commands.counters
        assert (counters.executed, counters.deduplicated) == (1, 0)
    assert boiler.applied == [(Action.SWITCH_ON, {})]  # exactly once, no duplicate
    doc = cloud_shadow(cloud, "boiler")
    assert (doc.reported or {})["state"] == "on" and doc.desired is None


# --- SIGKILL between actuation and outcome: a real agent process on the Modbus simulator ----

async def test_desired_set_offline_runs_once_even_when_the_agent_is_killed_mid_actuation(
        tmp_path: Path, mosquitto: Mosquitto, cloud: CloudService,
        simulator: MeterSimulator) -> None:  # noqa: F811 - the imported fixture
    config = tmp_path / "agent.toml"
    config.write_text(AGENT_TOML.format(gw=GW, data=tmp_path / "data", url=mosquitto.url,
                                        port=simulator.port, unit=WATER_HEATER_UNIT))
    with agent_process(config) as first:  # reports what the heater is: on
        await until(settled_at(cloud, "waterheater", "on"), 30, "the first report")
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 20) == 0
    await patch_desired(cloud, "waterheater", {"state": "off"})  # while it is away
    simulator.set_fault(WATER_HEATER_UNIT, "silent")  # the write lands, its answer never
    with agent_process(config) as second:
        async with asyncio.timeout(30):
            while not switch_writes(simulator):
                await asyncio.sleep(0.0005)  # no write event: poll tightly, kill right after
        second.send_signal(signal.SIGKILL)
        await asyncio.to_thread(second.wait, 10)
    simulator.clear_fault(WATER_HEATER_UNIT)
    assert (cloud_shadow(cloud, "waterheater").desired or {}) == {"state": "off"}
    with agent_process(config) as third:
        await until(settled_at(cloud, "waterheater", "off"), 30, "the heater reported off")
        third.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(third.wait, 20) == 0
    assert len(switch_writes(simulator)) == 1  # executed exactly once, never again after the kill
    assert simulator.holding(WATER_HEATER_UNIT, 0) == 0
    last = (cloud_shadow(cloud, "waterheater").reported or {})["last_command"]
    assert last["outcome"] == "unknown" and "interrupted" in last["reason"]
