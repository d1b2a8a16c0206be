"""Sampled telemetry batches carry a traceparent, and the cloud's store span joins that trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloud_sync.fakes import FakeIngestBus, FakeTelemetryStore
from cloud_sync.ports import InboundMessage
from edge_agent.drain import pack_batch
from observability import tracing
from protocols import InvalidMessage, Reading, TelemetryBatch, Unit, decode, encode, topics
from tests.unit.test_ingestion import GW, drain, make_worker

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.install_tracer_provider(provider)
    yield spans
    tracing.install_tracer_provider(None)


def readings(n: int) -> list[Reading]:
    return [Reading(meter_id="grid", channel="power", value=float(i), unit=Unit.WATT,
                    ts=1_764_000_000_000 + i, seq=i + 1) for i in range(n)]


def test_traced_batch_payload_is_the_model_encoding_with_its_traceparent() -> None:
    packed = pack_batch(GW, readings(5), 4096, traceparent=TRACEPARENT)
    assert packed is not None
    expected = TelemetryBatch(gateway_id=GW, readings=readings(5), traceparent=TRACEPARENT)
    assert packed.payload == encode(expected)
    assert decode(TelemetryBatch, packed.payload).traceparent == TRACEPARENT


def test_a_malformed_traceparent_is_rejected_with_the_field_named() -> None:
    bad = encode(TelemetryBatch(gateway_id=GW, readings=readings(1))).replace(
        b'"traceparent":null', b'"traceparent":"x"')
    with pytest.raises(InvalidMessage) as caught:
        decode(TelemetryBatch, bad)
    assert caught.value.field == "traceparent"


def test_store_span_of_a_traced_batch_joins_the_agents_trace(exporter: InMemorySpanExporter
                                                            ) -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus)
    traced = TelemetryBatch(gateway_id=GW, readings=readings(3), traceparent=TRACEPARENT)
    untraced = TelemetryBatch(gateway_id=GW, readings=readings(6)[3:])
    for mid, batch in enumerate((traced, untraced), start=1):
        worker.offer(InboundMessage(topics.telemetry(GW), encode(batch), mid, 1))
    drain(worker)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["telemetry.store"]
    assert f"{spans[0].context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert spans[0].parent is not None
    assert f"{spans[0].parent.span_id:016x}" == TRACEPARENT.split("-")[2]
    assert spans[0].attributes == {"gateway": GW, "readings": 3}
