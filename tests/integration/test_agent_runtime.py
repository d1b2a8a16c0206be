"""The running agent (real SQLite buffer, real PahoUplink, real Mosquitto) against a fake cloud
that acks what it stores: end-to-end delivery, resends, broker outages, status, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from edge_agent.buffer import BufferStats
from edge_agent.config import AgentConfig
from edge_agent.ports import Message
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from edge_agent.telemetry_drain import TRACE_ONE_IN
from edge_agent.uplink import FakeUplink, PahoUplink
from observability import tracing
from protocols import TelemetryBatch, topics
from protocols.models import (
    GatewayStatus,
    MeterHealth,
    Reading,
    SeqRange,
    TelemetryAck,
    Unit,
    decode,
    encode,
)
from tests.integration.conftest_uplink_cloud import Changes, FakeCloud
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

GW = "gw-runtime"
NOW_MS = 1_764_000_000_000
HEALTH = {
    "grid": MeterHealth(state="ok", last_success_ts=NOW_MS),
    "pv": MeterHealth(state="offline", consecutive_failures=4, last_error="timeout"),
}
POLLER = functools.partial(FakePoller, health=HEALTH)


def make_config(tmp_path: Path, url: str, **mqtt: object) -> AgentConfig:
    settings: dict[str, object] = {"url": url, "keepalive_s": 5, "reconnect_min_s": 0.2,
                                   "reconnect_max_s": 1.0, "ack_timeout_s": 2.0}
    settings.update(mqtt)
    return AgentConfig(gateway_id=GW, data_dir=tmp_path / "data", status_interval_s=0.5,
                       mqtt=settings)


def readings(count: int, *, ts: int = NOW_MS) -> list[Reading]:
    return [Reading(meter_id="grid", channel="power_w", value=float(i), unit=Unit.WATT,
                    ts=ts + i) for i in range(count)]


@contextlib.asynccontextmanager
async def running(config: AgentConfig) -> AsyncIterator[Agent]:
    agent = Agent(config, poller=POLLER)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def depth(agent: Agent) -> int:
    return agent.buffer.stats().depth


def last_seq(agent: Agent) -> int:
    stats = agent.buffer.stats()
    assert isinstance(stats, BufferStats)
    return stats.last_seq


async def cloud_ready(changes: Changes, cloud: FakeCloud) -> None:
    await changes.until(cloud.ready, 10)


async def test_appended_readings_are_delivered_confirmed_and_leave_the_buffer(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes) as cloud:
        await cloud_ready(changes, cloud)
        async with running(make_config(tmp_path, mosquitto.url)) as agent:
            for _ in range(10):
                await agent.ingest(readings(500))
            await changes.until(lambda: depth(agent) == 0, 30, also_every=0.1)
            last = last_seq(agent)
    assert len(cloud.distinct()) == 5000
    assert cloud.distinct() == set(range(last - 4999, last + 1))


async def test_without_acks_nothing_is_deleted_and_batches_are_resent_after_the_timeout(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes, acking=False) as cloud:
        await cloud_ready(changes, cloud)
        async with running(make_config(tmp_path, mosquitto.url, ack_timeout_s=1.0)) as agent:
            await agent.ingest(readings(300))
            await changes.until(
                lambda: len(cloud.received) == 300 and min(cloud.received.values()) >= 2, 20)
            assert depth(agent) == 300  # PUBACKs came, but no ack: nothing left the buffer
            assert agent.drain.batches_resent >= 1
            cloud.acking = True
            await changes.until(lambda: depth(agent) == 0, 20, also_every=0.1)


async def test_broker_killed_and_restarted_mid_stream_loses_no_reading(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes) as cloud:
        await cloud_ready(changes, cloud)
        async with running(make_config(tmp_path, mosquitto.url)) as agent:
            assert isinstance(agent.uplink, PahoUplink)
            await asyncio.wait_for(agent.uplink.wait_connected(), 10)
            await asyncio.sleep(1.1)  # let the broker autosave the sessions (autosave 1 s)
            for _ in range(5):
                await agent.ingest(readings(200))
            await changes.until(lambda: len(cloud.distinct()) >= 200, 10)
            attempts_before = agent.uplink.connect_attempts
            mosquitto.kill()
            for _ in range(5):  # the meters keep reading during the outage
                await agent.ingest(readings(200))
            await asyncio.sleep(1.5)  # the outage
            mosquitto.start()
            await changes.until(lambda: depth(agent) == 0, 40, also_every=0.2)
            sent = set(range(1, last_seq(agent) + 1))
            attempts = agent.uplink.connect_attempts - attempts_before
    lost = sent - cloud.distinct()
    assert lost == set()
    assert len(sent) == 2000
    assert attempts <= 10  # backoff, not a tight reconnect loop


async def test_live_readings_arrive_while_a_large_backlog_drains(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes) as cloud:
        await cloud_ready(changes, cloud)
        async with running(make_config(tmp_path, mosquitto.url)) as agent:
            await agent.ingest(readings(20_000, ts=NOW_MS - 3_600_000))
            await changes.until(lambda: cloud.batches >= 2, 20)
            await agent.ingest(readings(1))
            live_seq = last_seq(agent)
            await changes.until(lambda: live_seq in cloud.received, 20)
            backlog_left = sum(1 for s in range(1, 20_001) if s not in cloud.received)
    # At 512 KB/s the 2 MB backlog takes ~4 s: the live reading did not wait for it.
    assert backlog_left > 0


def statuses(cloud: FakeCloud) -> list[GatewayStatus]:
    return [decode(GatewayStatus, p) for p in list(cloud.statuses)]


async def test_status_is_retained_with_buffer_depth_oldest_age_drops_and_meter_health(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes, acking=False, watch_status=True) as cloud:
        await cloud_ready(changes, cloud)
        async with running(make_config(tmp_path, mosquitto.url)) as agent:
            old = agent.clock.now_ms() - 120_000
            await agent.ingest(readings(100, ts=old))

            def reported() -> bool:
                return any(s.buffer_depth == 100 for s in statuses(cloud))

            await changes.until(reported, 10)
        await changes.until(lambda: statuses(cloud)[-1].state == "offline", 10)
    status = next(s for s in statuses(cloud) if s.buffer_depth == 100)
    assert status.state == "online"
    assert status.oldest_unsent_age_s is not None and status.oldest_unsent_age_s >= 120
    assert status.dropped_readings == 0
    assert status.meters == HEALTH


CONFIG = """
gateway_id = "{gw}"
data_dir = "{data}"
status_interval_s = 30

[mqtt]
url = "{url}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
"""


async def test_sigterm_stops_the_agent_cleanly_with_exit_code_0(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(gw=GW, data=tmp_path / "data", url=mosquitto.url))
    script = ("import sys\nfrom pathlib import Path\nfrom edge_agent.config import load_config\n"
              "from edge_agent.runtime import run\nsys.exit(run(load_config(Path(sys.argv[1]))))")
    changes = Changes()
    with FakeCloud(mosquitto.port, GW, changes, watch_status=True) as cloud:
        await cloud_ready(changes, cloud)
        with subprocess.Popen([sys.executable, "-c", script, str(config)],
                              stderr=subprocess.DEVNULL) as child:
            states: Callable[[], list[str]] = lambda: [s.state for s in statuses(cloud)]  # noqa: E731
            try:
                await changes.until(lambda: "online" in states(), 20)
                child.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(child.wait, 20)
            finally:
                child.kill()
        await changes.until(lambda: states()[-1:] == ["offline"], 10)
    assert code == 0


async def test_ack_for_seqs_not_in_flight_still_confirms_them_and_bad_acks_are_skipped(
        tmp_path: Path) -> None:
    # A late ack (e.g. for batches sent before a restart) names seqs this run never sent.
    uplink = FakeUplink(connect_on_start=False)
    config = make_config(tmp_path, "mqtt://127.0.0.1:1")
    agent = Agent(config, uplink=uplink, poller=POLLER)
    await agent.start()
    try:
        await agent.ingest(readings(10))
        ack_topic = topics.telemetry_ack(GW)
        uplink.inject(Message(ack_topic, b'{"not": "an ack"}'))
        ack = TelemetryAck(gateway_id=GW, ranges=[SeqRange(first=1, last=10)])
        uplink.inject(Message(ack_topic, encode(ack)))
        await Changes().until(lambda: depth(agent) == 0, 10, also_every=0.02)
        assert agent.invalid_acks == 1
        assert uplink.published == []  # never connected: nothing was sent
    finally:
        await agent.stop()



async def test_with_tracing_on_the_first_batch_carries_a_traceparent_the_next_ones_do_not(
        tmp_path: Path) -> None:
    tracing.install_tracer_provider(TracerProvider())
    uplink = FakeUplink()
    agent = Agent(make_config(tmp_path, "mqtt://127.0.0.1:1"), uplink=uplink, poller=POLLER)

    def batches() -> list[TelemetryBatch]:
        return [decode(TelemetryBatch, m.payload) for m in uplink.published
                if m.topic == topics.telemetry(GW)]

    await agent.start()
    try:
        for round_ in range(1, 4):
            await agent.ingest(readings(10, ts=NOW_MS + round_ * 1000))
            await Changes().until(lambda r=round_: len(batches()) >= r, 10, also_every=0.02)
        sent = batches()
        assert sent[0].traceparent is not None
        assert [b.traceparent for b in sent[1:]] == [None] * (len(sent) - 1)
        assert len(sent) < TRACE_ONE_IN
    finally:
        tracing.install_tracer_provider(None)
        await agent.stop()
