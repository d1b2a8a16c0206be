"""homewatt's wire contract: message models, topics, register maps and meter maths. No I/O."""

from protocols import topics
from protocols.commands import Action, Command, CommandAck, Outcome, Priority
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
    "Action",
    "Command",
    "CommandAck",
    "GatewayStatus",
    "InvalidMessage",
    "MeterHealth",
    "Outcome",
    "Priority",
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
