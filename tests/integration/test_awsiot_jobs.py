"""The agent's Jobs channel on awsiotsdk's own IotJobsClientV2 (``transport = "awsiot"``),
sharing the AwsIotUplink's mutual-TLS connection, against our Jobs service through Mosquitto
with the generated broker config: notify-next, start-next, versioned updates, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloud_sync.bootstrap import CloudService
from edge_agent.awsiot_jobs import AwsIotJobsChannel
from edge_agent.awsiot_uplink import AwsIotUplink
from edge_agent.config import MqttSettings
from edge_agent.jobs_channel import JobsRejected
from edge_agent.ports import Message
from tests.integration.conftest_cloud import register, started, tls_cloud_settings
from tests.integration.jobs_fixtures import jobs_of, jobs_store
from tests.tls_broker import TlsBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
GW = "gw-jobs-aws"
T0 = 1_795_000_000_000


@pytest.fixture
def cloud(tls_broker: TlsBroker, tmp_path: Path) -> Iterator[CloudService]:
    settings = tls_cloud_settings(tls_broker, tmp_path, "cloud-jobs-aws")
    register(settings, GW)
    service = started(settings)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
async def channel(tls_broker: TlsBroker) -> AsyncIterator[AwsIotJobsChannel]:
    me = tls_broker.identity(GW)
    settings = MqttSettings(transport="awsiot", url=f"mqtts://localhost:{tls_broker.port}",
                            ca_file=me.ca, cert_file=me.cert, key_file=me.key, keepalive_s=60)
    uplink = AwsIotUplink(settings, client_id=GW, subscriptions=[],
                          will=lambda: Message(f"hw/{GW}/status", b"{}", retain=True))
    jobs = AwsIotJobsChannel(GW, uplink.client, timeout_s=5)
    await uplink.start()
    await asyncio.wait_for(uplink.wait_connected(), 15)
    jobs.open()
    try:
        yield jobs
    finally:
        await uplink.stop()


async def test_jobs_through_the_sdk_client_on_the_agents_own_connection(
        cloud: CloudService, channel: AwsIotJobsChannel) -> None:
    assert await channel.describe("$next") is None  # also: the stream is subscribed by now
    store = jobs_store(cloud)
    store.create_job("fw-2", {"operation": "firmware_update", "version": "2.0.0"}, T0)
    store.queue_executions("fw-2", [GW], T0)
    jobs_of(cloud).wake()
    queued = await asyncio.wait_for(channel.next_changed(), 15)
    assert queued is not None and (queued.job_id, queued.status) == ("fw-2", "QUEUED")
    assert queued.document == {"operation": "firmware_update", "version": "2.0.0"}

    started_ = await channel.start_next(step_timeout_min=30, details={"step": "downloading"})
    assert started_ is not None and (started_.status, started_.version) == ("IN_PROGRESS", 2)
    assert started_.status_details == {"step": "downloading"}
    version = await channel.update("fw-2", "IN_PROGRESS", expected_version=2,
                                   details={"step": "installing"})
    assert version == 3
    with pytest.raises(JobsRejected) as stale:
        await channel.update("fw-2", "SUCCEEDED", expected_version=2, details={})
    assert (stale.value.code, stale.value.version) == ("VersionMismatch", 3)
    assert await channel.update("fw-2", "SUCCEEDED", expected_version=3,
                                details={"result": "committed"}) == 4
    assert await asyncio.wait_for(channel.next_changed(), 15) is None  # nothing next
    assert await channel.describe("nope") is None
    assert store.execution("fw-2", GW)["status"] == "SUCCEEDED"
