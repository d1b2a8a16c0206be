"""homewatt's wire contract: message models, topics, register maps and meter maths. No I/O."""

from protocols import topics
from protocols.errors import InvalidMessage, ProtocolError
from protocols.models import (
    SCHEMA_VERSION,
    GatewayStatus,
    MeterHealth,
    Quality,
    Reading,
    SeqRange,
    TelemetryAck,
    TelemetryBatch,
    Unit,
    decode,
    encode,
)

__all__ = [
    "SCHEMA_VERSION",
    "GatewayStatus",
    "InvalidMessage",
    "MeterHealth",
    "ProtocolError",
    "Quality",
    "Reading",
    "SeqRange",
    "TelemetryAck",
    "TelemetryBatch",
    "Unit",
    "decode",
    "encode",
    "topics",
]
