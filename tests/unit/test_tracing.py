"""W3C traceparent parsing/formatting and the span helpers of both deployables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability import tracing
from protocols.commands import CommandAck, Outcome
from protocols.models import Reading, TelemetryBatch, Unit, decode, encode
from protocols.trace import TraceParent, format_traceparent, parse_traceparent, trace_id_of

HEADER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_parses_to_its_ids() -> None:
    parsed = parse_traceparent(HEADER)
    assert parsed == TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    assert parsed.sampled and parsed.header() == HEADER
    assert trace_id_of(HEADER) == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("bad", [
    None, "", "garbage", HEADER[:-1], HEADER.replace("-01", "-0g"),
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"])
def test_a_malformed_or_invalid_traceparent_parses_to_none(bad: str | None) -> None:
    assert parse_traceparent(bad) is None and trace_id_of(bad) is None


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))
def test_format_then_parse_round_trips(trace_id: int, span_id: int, flags: int) -> None:
    assert parse_traceparent(format_traceparent(trace_id, span_id, flags)) == \
        TraceParent(trace_id, span_id, flags)


def test_zero_ids_cannot_be_formatted() -> None:
    with pytest.raises(ValueError):
        format_traceparent(0, 1)


def test_wire_models_carry_an_optional_traceparent() -> None:
    ack = CommandAck(command_id="cmd-00000001", gateway_id="gw", device_id="d",
                     outcome=Outcome.EXECUTED, ts=1_700_000_000_000, traceparent=HEADER)
    assert decode(CommandAck, encode(ack)).traceparent == HEADER
    batch = TelemetryBatch(gateway_id="gw", readings=[Reading(
        meter_id="m", channel="power_w", value=1.0, unit=Unit.WATT, ts=1_700_000_000_000,
        seq=1)])
    assert batch.traceparent is None and decode(TelemetryBatch, encode(batch)) == batch


@pytest.fixture
def traced() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    module = tracing
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    module.install_tracer_provider(provider)
    try:
        yield module, exporter
    finally:
        module.install_tracer_provider(None)


def test_a_span_continues_an_incoming_traceparent(
        traced: tuple[Any, InMemorySpanExporter]) -> None:
    module, exporter = traced
    with module.span("hop", traceparent=HEADER):
        outgoing = module.current_traceparent()
        ids = module.current_span_ids()
    [span] = exporter.get_finished_spans()
    assert span.parent is not None and span.parent.span_id == 0x00F067AA0BA902B7
    assert trace_id_of(outgoing) == trace_id_of(HEADER)
    assert ids == (trace_id_of(HEADER), f"{span.context.span_id:016x}")


def test_without_a_valid_parent_a_span_starts_a_new_trace(
        traced: tuple[Any, InMemorySpanExporter]) -> None:
    module, exporter = traced
    with module.span("root", traceparent="not-a-traceparent"), module.span("child"):
        pass
    child, root = exporter.get_finished_spans()
    assert root.parent is None and child.parent is not None
    assert child.context.trace_id == root.context.trace_id


def test_with_tracing_off_spans_record_nothing_but_pass_a_trace_through() -> None:
    module = tracing
    assert module.configure_tracing("none") is None
    assert not module.tracing_enabled()
    with module.span("untraced"):
        assert module.current_traceparent() is None
    with module.span("hop", traceparent=HEADER):
        assert module.current_traceparent() == HEADER


@pytest.mark.parametrize("exporter", ["console", "otlp"])
def test_configured_exporters_install_an_sdk_provider(exporter: str) -> None:
    provider = tracing.configure_tracing(
        exporter, endpoint="http://127.0.0.1:4318/v1/traces")
    try:
        assert provider is not None and tracing.tracing_enabled()
    finally:
        tracing.install_tracer_provider(None)
        assert provider is not None
        provider.shutdown()  # nothing was recorded: nothing is sent


def test_an_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="none, console, otlp"):
        tracing.configure_tracing("jaeger")
