"""Every kind of bad telemetry payload gets the right dead-letter reason; good ones pass."""

from __future__ import annotations

import json

import pytest

from cloud_sync.classify import Rejection, RejectKind, classify
from protocols import Reading, TelemetryBatch, Unit, encode, topics

GW = "gw-1"
TS = 1_700_000_000_000


def good_batch(gw: str = GW, first_seq: int = 1, n: int = 3) -> TelemetryBatch:
    return TelemetryBatch(
        gateway_id=gw,
        readings=[
            Reading(
                meter_id="m1",
                channel="power_w",
                value=100.0 + i,
                unit=Unit.WATT,
                ts=TS + i,
                seq=first_seq + i,
            )
            for i in range(n)
        ],
    )


def good_dict() -> dict[str, object]:
    doc: dict[str, object] = json.loads(encode(good_batch()))
    return doc


def with_reading(**changes: object) -> bytes:
    doc = good_dict()
    readings = doc["readings"]
    assert isinstance(readings, list)
    readings[0].update(changes)
    return json.dumps(doc).encode()


def test_good_batch_from_registered_gateway_is_accepted() -> None:
    result = classify(topics.telemetry(GW), encode(good_batch()), {GW})
    assert isinstance(result, TelemetryBatch)
    assert [r.seq for r in result.readings] == [1, 2, 3]


@pytest.mark.parametrize(
    ("payload", "kind", "mentions"),
    [
        (b"not json at all", RejectKind.NOT_JSON, "Invalid JSON"),
        (b"\xff\xfe\x00\x01binary", RejectKind.NOT_JSON, "Invalid JSON"),
        (encode(good_batch())[:-7], RejectKind.NOT_JSON, "Invalid JSON"),
        (b"[1, 2]", RejectKind.INVALID, "object"),
        (
            json.dumps({**good_dict(), "schema_version": 2}).encode(),
            RejectKind.INVALID,
            "schema_version",
        ),
        (json.dumps({**good_dict(), "readings": []}).encode(), RejectKind.INVALID, "readings"),
        (with_reading(value="high"), RejectKind.INVALID, "readings.0.value"),
        (with_reading(ts="yesterday"), RejectKind.INVALID, "readings.0.ts"),
        (with_reading(seq=None), RejectKind.INVALID, "seq"),
        (with_reading(unit="furlong"), RejectKind.INVALID, "readings.0.unit"),
        (with_reading(extra_field=1), RejectKind.INVALID, "extra_field"),
        (
            encode(good_batch()).replace(b'"value":100.0', b'"value":NaN'),
            RejectKind.INVALID,
            "finite",
        ),
        (encode(good_batch(gw="gw-other")), RejectKind.TOPIC_MISMATCH, "gw-other"),
        (
            encode(good_batch()) + b" " * (topics.MAX_PAYLOAD_BYTES + 1),
            RejectKind.OVERSIZE,
            "bytes",
        ),
    ],
)
def test_bad_payload_is_rejected_with_reason_naming_the_problem(
    payload: bytes, kind: RejectKind, mentions: str
) -> None:
    result = classify(topics.telemetry(GW), payload, {GW, "gw-other"})
    assert isinstance(result, Rejection)
    assert result.kind is kind
    assert mentions in result.reason
    assert result.reason.startswith(f"{kind.value}: ")


def test_unknown_gateway_is_rejected_and_names_the_fix() -> None:
    result = classify(topics.telemetry("gw-stranger"), encode(good_batch("gw-stranger")), {GW})
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.UNKNOWN_GATEWAY
    assert "add-gateway" in result.reason


@pytest.mark.parametrize("topic", ["hw/gw-1/status", "other/topic", "hw/gw 1/telemetry"])
def test_message_on_a_non_telemetry_topic_is_rejected(topic: str) -> None:
    result = classify(topic, encode(good_batch()), {GW})
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.BAD_TOPIC


def test_oversize_is_checked_before_parsing() -> None:
    result = classify(topics.telemetry(GW), b"x" * 200_000, {GW})
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.OVERSIZE
