"""The wire models accept exactly the contract and name the field of anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import (
    GatewayStatus,
    InvalidMessage,
    Quality,
    Reading,
    SeqRange,
    TelemetryAck,
    TelemetryBatch,
    Unit,
    decode,
    encode,
)
from protocols.models import MAX_TS_MS, MIN_TS_MS

TS = 1_764_000_000_000


def reading(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "meter_id": "grid",
        "channel": "power",
        "value": 1.5,
        "unit": "W",
        "ts": TS,
        "quality": "good",
        "seq": 1,
    }
    base.update(overrides)
    return base


def batch_bytes(*readings: dict[str, object], **overrides: object) -> bytes:
    body: dict[str, object] = {
        "schema_version": 1,
        "gateway_id": "gw-1",
        "readings": list(readings),
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_batch_round_trips_through_json() -> None:
    batch = decode(
        TelemetryBatch, batch_bytes(reading(), reading(seq=2, value=None, quality="error"))
    )
    assert decode(TelemetryBatch, encode(batch)) == batch
    assert batch.readings[1].quality is Quality.ERROR


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (batch_bytes(reading(ts=5)), "readings.0.ts"),
        (batch_bytes(reading(unit="kWh")), "readings.0.unit"),
        (batch_bytes(reading(seq=None)), "readings"),
        (batch_bytes(reading(seq=0)), "readings.0.seq"),
        (batch_bytes(reading(channel="Power L1")), "readings.0.channel"),
        (batch_bytes(reading(extra=1)), "readings.0.extra"),
        (batch_bytes(reading(), gateway_id="gw/1"), "gateway_id"),
        (batch_bytes(reading(), schema_version=2), "schema_version"),
        (batch_bytes(), "readings"),
    ],
)
def test_invalid_batch_names_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(TelemetryBatch, payload)
    assert caught.value.field.startswith(field), caught.value


def test_failed_read_carries_no_value_but_good_needs_one() -> None:
    Reading(meter_id="m", channel="power", value=None, unit=Unit.WATT, ts=TS, quality=Quality.ERROR)
    with pytest.raises(ValueError, match="value is required"):
        Reading(meter_id="m", channel="power", value=None, unit=Unit.WATT, ts=TS)


def test_nan_is_not_a_value() -> None:
    with pytest.raises(InvalidMessage):
        decode(TelemetryBatch, batch_bytes(reading(value=float("nan"))).replace(b"NaN", b"NaN"))


def test_not_json_is_one_clear_error() -> None:
    with pytest.raises(InvalidMessage):
        decode(TelemetryBatch, b"\x00\xffnot json")


def test_ack_ranges_must_be_ordered() -> None:
    assert TelemetryAck(gateway_id="g", ranges=[SeqRange(first=1, last=9)]).ranges[0].last == 9
    with pytest.raises(InvalidMessage, match="last must be >= first"):
        decode(TelemetryAck, b'{"gateway_id":"g","ranges":[{"first":5,"last":4}]}')


def test_status_defaults_are_explicit_on_the_wire() -> None:
    status = GatewayStatus(gateway_id="g", state="offline", ts=TS)
    assert json.loads(encode(status))["buffer_depth"] == 0


@given(
    value=st.floats(allow_nan=False, allow_infinity=False),
    ts=st.integers(MIN_TS_MS, MAX_TS_MS),
    seq=st.integers(1, 2**63 - 1),
)
def test_any_valid_reading_round_trips(value: float, ts: int, seq: int) -> None:
    original = TelemetryBatch(
        gateway_id="gw",
        readings=[
            Reading(
                meter_id="m",
                channel="energy_import",
                value=value,
                unit=Unit.WATT_HOUR,
                ts=ts,
                seq=seq,
            )
        ],
    )
    assert decode(TelemetryBatch, encode(original)) == original
