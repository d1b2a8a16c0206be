"""One trace follows a command across processes: API request -> outbox -> MQTT publish ->
agent receive -> actuation -> ack -> status update, through a real Mosquitto, with an
in-process cloud service and agent (mock-pin relay) recording into the SDK's in-memory
exporter. The command status API reports that trace id."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloud_sync.bootstrap import CloudService
from edge_agent.config import AgentConfig
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from observability import tracing
from protocols.trace import parse_traceparent
from tests.integration.conftest_cloud import GW, api_client
from tests.integration.conftest_cloud_commands import (
    DEVICE,
    DEVICE_ID,
    command_settings,
    register_devices,
    start_service,
)
from tests.integration.conftest_uplink_cloud import Changes
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RELAY_PIN = 17
EXPECTED = {"POST /api/v1/devices/{device_id}/commands", "command.publish", "command.receive",
            "command.actuate", "command.ack", "command.status_update"}


class _Notify(SpanProcessor):
    def __init__(self, changes: Changes) -> None:
        self.changes = changes

    def on_end(self, span: ReadableSpan) -> None:
        self.changes.notify()


@pytest.fixture
async def spans() -> AsyncIterator[tuple[InMemorySpanExporter, Changes]]:
    exporter = InMemorySpanExporter()
    changes = Changes()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(_Notify(changes))
    tracing.install_tracer_provider(provider)
    try:
        yield exporter, changes
    finally:
        tracing.install_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
def cloud(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[CloudService]:
    settings = command_settings(f"sqlite:///{tmp_path / 'cloud.sqlite'}", mosquitto, tmp_path)
    register_devices(settings)
    service = start_service(settings)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
async def agent(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Agent]:
    config = AgentConfig(
        gateway_id=GW, data_dir=tmp_path / "agent",
        mqtt={"url": mosquitto.url, "keepalive_s": 5, "reconnect_min_s": 0.2,
              "reconnect_max_s": 1.0},
        actuators=[{"id": DEVICE, "kind": "relay", "pin": RELAY_PIN}])
    running = Agent(config, poller=FakePoller, pin_factory=MockFactory())
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def _ended(exporter: InMemorySpanExporter) -> set[str]:
    return {s.name for s in exporter.get_finished_spans()}


async def test_one_trace_id_follows_a_command_from_the_api_to_the_agent_and_back(
        spans: tuple[InMemorySpanExporter, Changes], cloud: CloudService, agent: Agent) -> None:
    exporter, changes = spans
    async with api_client(cloud) as client:
        created = await client.post(f"/api/v1/devices/{DEVICE_ID}/commands",
                                    json={"action": "switch_on"},
                                    headers={"Idempotency-Key": uuid.uuid4().hex})
        assert created.status_code == 201, created.text
        command_id = created.json()["command_id"]
        await changes.until(lambda: _ended(exporter) >= EXPECTED, 30)
        status = (await client.get(f"/api/v1/devices/{DEVICE_ID}/commands/{command_id}")).json()

    trace_id = created.json()["trace_id"]
    assert trace_id is not None and len(trace_id) == 32
    assert status["status"] == "executed" and status["trace_id"] == trace_id
    # Telemetry the agent sends meanwhile is traced separately (one batch in 100, its own trace).
    finished = [s for s in exporter.get_finished_spans() if not s.name.startswith("telemetry.")]
    assert {f"{s.context.trace_id:032x}" for s in finished} == {trace_id}
    roots = [s for s in finished if s.parent is None]
    assert [s.name for s in roots] == ["POST /api/v1/devices/{device_id}/commands"]
    # each hop is a child of the one before, across the broker both ways (a redelivery may
    # add a second publish/receive/ack: every one of them still hangs off the right parent)
    ids: dict[str, set[int]] = {}
    for span in finished:
        ids.setdefault(span.name, set()).add(span.context.span_id)
    parent_of = {"command.publish": roots[0].name, "command.receive": "command.publish",
                 "command.actuate": "command.receive", "command.ack": "command.receive",
                 "command.status_update": "command.ack"}
    for span in finished:
        if span.name in parent_of:
            assert span.parent is not None and span.parent.span_id in ids[parent_of[span.name]]


async def test_with_tracing_off_commands_still_work_and_report_no_trace_id(
        cloud: CloudService, agent: Agent) -> None:
    async with api_client(cloud) as client:
        created = await client.post(f"/api/v1/devices/{DEVICE_ID}/commands",
                                    json={"action": "switch_on"},
                                    headers={"Idempotency-Key": uuid.uuid4().hex})
        assert created.status_code == 201, created.text
        url = f"/api/v1/devices/{DEVICE_ID}/commands/{created.json()['command_id']}"
        deadline = time.monotonic() + 30
        status = created.json()
        while status["status"] != "executed":  # the DB status has no event to await
            assert time.monotonic() < deadline, f"command not executed: {status}"
            await asyncio.sleep(0.05)
            status = (await client.get(url)).json()
    assert created.json()["trace_id"] is None and status["trace_id"] is None


async def test_a_caller_traceparent_header_becomes_the_command_trace(
        spans: tuple[InMemorySpanExporter, Changes], cloud: CloudService) -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with api_client(cloud) as client:
        created = await client.post(f"/api/v1/devices/{DEVICE_ID}/commands",
                                    json={"action": "switch_on"},
                                    headers={"Idempotency-Key": uuid.uuid4().hex,
                                             "traceparent": incoming})
    parsed = parse_traceparent(incoming)
    assert parsed is not None and created.json()["trace_id"] == parsed.trace_id_hex
