"""The agent's shadow channel on awsiotsdk's own IotShadowClientV2 (``transport = "awsiot"``),
sharing the AwsIotUplink's mutual-TLS connection, against our shadow service through Mosquitto
with the generated broker config; and a whole agent on that transport, whose shadow and Jobs
channels are the SDK's: desired set by REST is executed, reported and cleared, also when it
was set while the broker was down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from cloud_sync.bootstrap import CloudService
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import make_db_breaker
from edge_agent.actuators import FakeActuator
from edge_agent.awsiot_jobs import AwsIotJobsChannel
from edge_agent.awsiot_shadow import AwsIotShadowChannel
from edge_agent.awsiot_uplink import AwsIotUplink
from edge_agent.config import AgentConfig, MqttSettings
from edge_agent.ports import Message
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from edge_agent.shadow_channel import ShadowRejected
from firmware_update.slots_dir import DirectorySlots
from protocols import shadow
from protocols.commands import Action
from tests.fw_helpers import app_tree, make_signer
from tests.integration.conftest_cloud import (
    api_client,
    register,
    shadows_of,
    started,
    tls_cloud_settings,
    until,
)
from tests.tls_broker import TlsBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
GW = "gw-shadow-aws"


@pytest.fixture
def cloud(tls_broker: TlsBroker, tmp_path: Path) -> Iterator[CloudService]:
    settings = tls_cloud_settings(tls_broker, tmp_path, "cloud-shadow-aws")
    register(settings, GW)
    service = started(settings)
    SqlRegistryStore(service.engine, make_db_breaker(3, 1.0)).add_device(
        GW, "boiler", 0, kind="actuator", capabilities=["switch_on", "switch_off"])
    try:
        yield service
    finally:
        service.stop()


def mqtt_settings(tls_broker: TlsBroker) -> MqttSettings:
    me = tls_broker.identity(GW)
    return MqttSettings(transport="awsiot", url=f"mqtts://localhost:{tls_broker.port}",
                        ca_file=me.ca, cert_file=me.cert, key_file=me.key, keepalive_s=60,
                        reconnect_min_s=0.2, reconnect_max_s=1.0)


@pytest.fixture
async def channel(tls_broker: TlsBroker) -> AsyncIterator[AwsIotShadowChannel]:
    uplink = AwsIotUplink(mqtt_settings(tls_broker), client_id=GW, subscriptions=[],
                          will=lambda: Message(f"hw/{GW}/status", b"{}", retain=True))
    sdk = AwsIotShadowChannel(GW, uplink.client, ["boiler", "heater"], timeout_s=5)
    await uplink.start()
    await asyncio.wait_for(uplink.wait_connected(), 15)
    sdk.open()
    try:
        yield sdk
    finally:
        await uplink.stop()


async def test_shadow_channel_through_the_sdk_on_the_agents_own_connection(
        cloud: CloudService, channel: AwsIotShadowChannel) -> None:
    assert await channel.get("boiler") is None  # waits for the delta stream: subscribed now
    assert await channel.update("boiler", {"reported": {"state": "off"}}, version=None) == 1
    doc = await asyncio.to_thread(shadows_of(cloud).update_desired, GW, "boiler",
                                  {"state": "on"})
    assert doc.version == 2
    delta = await asyncio.wait_for(channel.next_delta(), 15)
    assert (delta.name, delta.version, delta.state) == ("boiler", 2, {"state": "on"})
    assert delta.desired_ts["state"] > 0
    snapshot = await channel.get("boiler")
    assert snapshot is not None and snapshot.version == 2
    assert (snapshot.desired, snapshot.reported, snapshot.delta) == (
        {"state": "on"}, {"state": "off"}, {"state": "on"})
    assert snapshot.desired_ts == delta.desired_ts
    with pytest.raises(ShadowRejected) as stale:
        await channel.update("boiler", {"reported": {"state": "on"}}, version=1)
    assert stale.value.code == 409
    done = await channel.update("boiler", {"reported": {"state": "on"},
                                           "desired": {"state": None}}, version=2)
    assert done == 3
    after = shadows_of(cloud).store.get(GW, "boiler")
    assert after.desired is None and after.reported == {"state": "on"}
    assert await channel.get("heater") is None  # the second stream is live too


def firmware_settings(tmp_path: Path) -> dict[str, object]:
    """Updates on (so the agent needs a Jobs channel) with a trust root and directory slots."""
    ks, root = make_signer()
    envelope = root.envelope()
    envelope.sign(ks[0])
    (tmp_path / "root.json").write_bytes(envelope.to_bytes())
    DirectorySlots.initialize(tmp_path / "app", app_tree(tmp_path / "factory", "1.0.0"),
                              "1.0.0")
    return {"enabled": True, "app_root": tmp_path / "app", "trust_root": tmp_path / "root.json"}


async def test_an_awsiot_agent_uses_the_sdk_clients_for_shadows_and_jobs(
        tmp_path: Path, tls_broker: TlsBroker, cloud: CloudService) -> None:
    config = AgentConfig(gateway_id=GW, data_dir=tmp_path / "agent",
                         mqtt=mqtt_settings(tls_broker), firmware=firmware_settings(tmp_path),
                         # a get sent before the cloud is back on the broker is lost: ask again
                         shadow={"retry_s": 1, "request_timeout_s": 3},
                         actuators=[{"id": "boiler", "kind": "relay", "pin": 17}])
    boiler = FakeActuator("boiler")
    agent = Agent(config, poller=FakePoller, actuators={"boiler": boiler})
    assert isinstance(agent.channels.shadow, AwsIotShadowChannel)
    assert isinstance(agent.jobs, AwsIotJobsChannel)
    assert not [f for f in agent.inbound.filters if f.startswith("$aws/")]  # the SDK's own
    await agent.start()
    try:
        await until(lambda: agent.shadow is not None and agent.shadow.synced, 20,
                    "the first shadow sync")
        async with api_client(cloud) as api:
            reply = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                    json={"desired": {"state": "on"}})
            assert reply.status_code == 200, reply.text

        await until(settled(cloud, "on"), 20, "boiler reported on and desired cleared")
        assert boiler.applied == [(Action.SWITCH_ON, {})]
        assert agent.jobs is not None
        assert await agent.jobs.describe("$next") is None  # Jobs answer on the same connection

        tls_broker.kill()  # the broker goes away; the app changes its mind meanwhile
        await until(lambda: not agent.uplink.is_connected, 20, "the agent to notice")
        async with api_client(cloud) as api:
            reply = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                    json={"desired": {"state": "off"}})
            assert reply.status_code == 200, reply.text
        await asyncio.to_thread(tls_broker.start)  # the SDK's streams come back with it
        await until(settled(cloud, "off"), 40, "boiler reported off after the reconnect")
        assert boiler.applied == [(Action.SWITCH_ON, {}), (Action.SWITCH_OFF, {})]
    finally:
        await agent.stop()


def settled(cloud: CloudService, state: str) -> Callable[[], bool]:
    def check() -> bool:
        doc: shadow.ShadowDocument = shadows_of(cloud).store.get(GW, "boiler")
        return (doc.reported or {}).get("state") == state and not doc.desired
    return check
