"""The agent over the AWS IoT transport (awsiotsdk MQTT 5, mutual TLS) through Mosquitto with
the generated config, into the real cloud: telemetry stored and acked, a broker restart with
nothing lost, the retained offline status on shutdown, bad TLS files named."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud_sync.bootstrap import CloudService
from cloud_sync.db.schema import readings as readings_table
from edge_agent.awsiot_uplink import AwsIotUplink
from edge_agent.config import AgentConfig
from edge_agent.ports import Message
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from edge_agent.uplink import UplinkError
from protocols import topics
from protocols.models import GatewayStatus, Reading, Unit, decode
from tests.integration.conftest_cloud import register, started, tls_cloud_settings
from tests.integration.conftest_uplink_cloud import Changes
from tests.tls_broker import CLOUD_IDENTITY, MqttProbe, TlsBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

GW = "gw-aws"
NOW_MS = 1_764_000_000_000


@pytest.fixture
def cloud(tls_broker: TlsBroker, tmp_path: Path) -> Iterator[CloudService]:
    settings = tls_cloud_settings(tls_broker, tmp_path, "cloud-aws", ingest_retry_max_s=0.5)
    register(settings, GW)
    service = started(settings)
    try:
        yield service
    finally:
        service.stop()


def agent_config(tls_broker: TlsBroker, tmp_path: Path) -> AgentConfig:
    me = tls_broker.identity(GW)
    # awscrt verifies the broker's name: the test server certificate is valid for localhost
    return AgentConfig(gateway_id=GW, data_dir=tmp_path / "agent", status_interval_s=30, mqtt={
        "transport": "awsiot", "url": f"mqtts://localhost:{tls_broker.port}",
        "ca_file": me.ca, "cert_file": me.cert, "key_file": me.key, "keepalive_s": 5,
        "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "ack_timeout_s": 3.0})


@contextlib.asynccontextmanager
async def running(config: AgentConfig) -> AsyncIterator[Agent]:
    agent = Agent(config, poller=functools.partial(FakePoller, health={}))
    assert isinstance(agent.uplink, AwsIotUplink)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def readings(count: int, start: int) -> list[Reading]:
    return [Reading(meter_id="grid", channel="power_w", value=float(i), unit=Unit.WATT,
                    ts=NOW_MS + start + i) for i in range(count)]


def stored_seqs(cloud: CloudService) -> list[int]:
    with cloud.engine.connect() as conn:
        return list(conn.scalars(sa.select(readings_table.c.seq)
                                 .where(readings_table.c.gateway_id == GW)
                                 .order_by(readings_table.c.seq)))


async def test_telemetry_is_stored_and_acked_through_the_real_cloud_across_a_broker_restart(
        tls_broker: TlsBroker, cloud: CloudService, tmp_path: Path) -> None:
    changes = Changes()
    async with running(agent_config(tls_broker, tmp_path)) as agent:
        await changes.until(lambda: agent.uplink.is_connected, 15, also_every=0.05)
        for i in range(4):
            await agent.ingest(readings(250, i * 250))
        await changes.until(lambda: agent.buffer.stats().depth == 0, 30, also_every=0.05)

        tls_broker.kill()  # a broker crash: the agent buffers, then re-sends what is unconfirmed
        await changes.until(lambda: not agent.uplink.is_connected, 15, also_every=0.05)
        for i in range(4, 8):
            await agent.ingest(readings(250, i * 250))
        assert agent.buffer.stats().depth == 1000
        tls_broker.start()
        await changes.until(lambda: agent.buffer.stats().depth == 0, 60, also_every=0.1)
    seqs = stored_seqs(cloud)
    assert seqs == list(range(seqs[0], seqs[0] + 2000))  # every reading once, none lost
    assert cloud.worker.stats.as_dict()["dead_lettered"] == 0


async def test_stopping_publishes_the_retained_offline_status(
        tls_broker: TlsBroker, cloud: CloudService, tmp_path: Path) -> None:
    changes = Changes()
    async with running(agent_config(tls_broker, tmp_path)) as agent:
        await changes.until(lambda: agent.uplink.is_connected, 15, also_every=0.05)
    watcher = MqttProbe.connect(tls_broker, tls_broker.identity(CLOUD_IDENTITY))
    try:
        watcher.subscribe(topics.status(GW))
        retained = watcher.wait_for(topics.status(GW), 10)
    finally:
        watcher.close()
    assert retained.retain
    assert decode(GatewayStatus, retained.payload).state == "offline"


def test_unloadable_tls_files_are_named(tls_broker: TlsBroker, tmp_path: Path) -> None:
    config = agent_config(tls_broker, tmp_path)
    broken = tmp_path / "broken.key"
    broken.write_text("not a key")
    mqtt = config.mqtt.model_copy(update={"key_file": broken})

    def will() -> Message:
        return Message(topics.status(GW), b"{}", retain=True)
    with pytest.raises(UplinkError, match="cert_file / key_file / ca_file"):
        AwsIotUplink(mqtt, client_id=GW, subscriptions=[], will=will)
