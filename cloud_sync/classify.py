"""Pure classification of one telemetry message: an accepted batch or a dead-letter reason.

Nothing here touches the network or the database, so every kind of poison payload is unit
tested directly. The ingestion worker calls :func:`parse_telemetry` for every message, then
:func:`check_registered` once it knows which gateways exist.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from enum import StrEnum

from protocols import InvalidMessage, TelemetryBatch, decode, topics
from protocols.topics import HwTopic


class RejectKind(StrEnum):
    """Why a payload went to the dead-letter table (the prefix of the stored reason)."""

    OVERSIZE = "oversize"
    BAD_TOPIC = "bad_topic"
    NOT_JSON = "not_json"
    INVALID = "invalid"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_GATEWAY = "unknown_gateway"


@dataclass(frozen=True)
class Rejection:
    """A dead-letter verdict; ``reason`` is the one line stored and shown to operators."""

    kind: RejectKind
    detail: str

    @property
    def reason(self) -> str:
        return f"{self.kind.value}: {self.detail}"


def parse_telemetry(topic: str, payload: bytes, max_bytes: int = topics.MAX_PAYLOAD_BYTES,
                    ) -> TelemetryBatch | Rejection:
    """Validate size, topic and schema; check the topic's gateway is the payload's.

    The registry check is separate (:func:`check_registered`) because it needs the database.
    """
    if len(payload) > max_bytes:
        return Rejection(RejectKind.OVERSIZE, f"{len(payload)} bytes > limit {max_bytes}")
    parsed = _telemetry_topic(topic)
    if isinstance(parsed, Rejection):
        return parsed
    try:
        batch = decode(TelemetryBatch, payload)
    except InvalidMessage as exc:
        if not exc.field and exc.reason.startswith("Invalid JSON"):
            return Rejection(RejectKind.NOT_JSON, exc.reason)
        return Rejection(RejectKind.INVALID, str(exc))
    if batch.gateway_id != parsed.gateway_id:
        return Rejection(
            RejectKind.TOPIC_MISMATCH,
            f"topic gateway {parsed.gateway_id!r} != payload gateway_id {batch.gateway_id!r}",
        )
    return batch


def _telemetry_topic(topic: str) -> HwTopic | Rejection:
    try:
        parsed = topics.parse(topic)
    except InvalidMessage as exc:
        return Rejection(RejectKind.BAD_TOPIC, str(exc))
    if not isinstance(parsed, HwTopic) or parsed.kind != "telemetry":
        return Rejection(RejectKind.BAD_TOPIC, f"{topic!r} is not a telemetry topic")
    return parsed


def check_registered(batch: TelemetryBatch, known_gateways: Container[str]) -> Rejection | None:
    """``None`` when the batch's gateway is registered, else an ``unknown_gateway`` verdict."""
    if batch.gateway_id in known_gateways:
        return None
    return Rejection(
        RejectKind.UNKNOWN_GATEWAY,
        f"gateway {batch.gateway_id!r} is not registered (homewatt-cloud admin add-gateway)",
    )


def classify(topic: str, payload: bytes, known_gateways: Container[str],
             max_bytes: int = topics.MAX_PAYLOAD_BYTES) -> TelemetryBatch | Rejection:
    """Both checks in one call: the batch to store, or why it is dead-lettered."""
    result = parse_telemetry(topic, payload, max_bytes)
    if isinstance(result, Rejection):
        return result
    return check_registered(result, known_gateways) or result
