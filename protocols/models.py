"""Pydantic models of every message on the wire.

Validation is strict: a message either matches the contract exactly or is rejected with an
:class:`~protocols.errors.InvalidMessage` naming the first bad field. Unknown fields are
rejected too, so a typo in a sender never turns into silently missing data.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocols.errors import InvalidMessage

SCHEMA_VERSION: Final[Literal[1]] = 1
# AWS IoT Core thing names: [a-zA-Z0-9:_-]{1,128}.
GATEWAY_ID_PATTERN = r"^[A-Za-z0-9:_-]{1,128}$"
METER_ID_PATTERN = r"^[A-Za-z0-9:_.-]{1,64}$"
CHANNEL_PATTERN = r"^[a-z0-9_]{1,64}$"
# 2000-01-01 .. 2100-01-01 in epoch ms: outside that a clock is broken, not the world.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

GatewayId = Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
MeterId = Annotated[str, Field(pattern=METER_ID_PATTERN)]
Channel = Annotated[str, Field(pattern=CHANNEL_PATTERN)]
EpochMs = Annotated[int, Field(ge=MIN_TS_MS, le=MAX_TS_MS)]
Seq = Annotated[int, Field(ge=1, le=2**63 - 1)]
# W3C traceparent: version-traceid-spanid-flags, 55 characters for version 00.
TraceParentField = Annotated[
    str, Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
]


class Quality(StrEnum):
    """How far a value can be trusted.

    ``error`` carries no value (the read failed); ``suspect`` carries the raw value but must
    not feed energy totals (e.g. a counter that ran backwards); ``stale`` is a repeat of an
    older value because the device did not answer in time; ``unsynced`` is a good value whose
    ``ts`` could not be confirmed: it was read before the gateway's clock was ever synced (a
    Pi has no real-time clock) and sync was not seen in time to correct it, so it must not be
    put into time buckets either.
    """

    GOOD = "good"
    STALE = "stale"
    ERROR = "error"
    SUSPECT = "suspect"
    UNSYNCED = "unsynced"


class Unit(StrEnum):
    """The one unit per quantity used everywhere on the wire."""

    WATT = "W"
    VOLT = "V"
    AMPERE = "A"
    HERTZ = "Hz"
    WATT_HOUR = "Wh"
    VOLT_AMPERE = "VA"
    VAR = "var"
    VARH = "varh"
    PERCENT = "%"
    CELSIUS = "Cel"
    NONE = ""


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Reading(WireModel):
    """One measured value of one channel of one meter at one instant (UTC epoch ms)."""

    meter_id: MeterId
    channel: Channel
    value: float | None
    unit: Unit
    ts: EpochMs
    quality: Quality = Quality.GOOD
    seq: Seq | None = None

    @model_validator(mode="after")
    def _value_matches_quality(self) -> Reading:
        if self.value is None and self.quality in (Quality.GOOD, Quality.SUSPECT,
                                                   Quality.UNSYNCED):
            raise ValueError(f"value is required when quality is {self.quality.value}")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError("value must be a finite number (use quality=error and null)")
        return self


class TelemetryBatch(WireModel):
    """Readings a gateway sends in one publish; every reading carries its buffer ``seq``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    gateway_id: GatewayId
    readings: Annotated[list[Reading], Field(min_length=1, max_length=10_000)]
    # W3C trace context on a sampled batch; the cloud's ingestion span continues it.
    traceparent: TraceParentField | None = None  # W3C trace context (sampled batches)

    @field_validator("readings")
    @classmethod
    def _every_reading_has_seq(cls, readings: list[Reading]) -> list[Reading]:
        for index, reading in enumerate(readings):
            if reading.seq is None:
                raise ValueError(f"readings.{index}.seq is required in a batch")
        return readings


class SeqRange(WireModel):
    """Inclusive range of stored sequence numbers."""

    first: Seq
    last: Seq

    @model_validator(mode="after")
    def _ordered(self) -> SeqRange:
        if self.last < self.first:
            raise ValueError("last must be >= first")
        return self


class TelemetryAck(WireModel):
    """Sent by the cloud after the DB commit: these seqs are stored and may leave the buffer."""

    schema_version: Literal[1] = SCHEMA_VERSION
    gateway_id: GatewayId
    ranges: Annotated[list[SeqRange], Field(min_length=1)]


class MeterHealth(WireModel):
    state: Literal["ok", "degraded", "offline"]
    last_success_ts: EpochMs | None = None
    consecutive_failures: Annotated[int, Field(ge=0)] = 0
    last_error: str | None = None


class GatewayStatus(WireModel):
    """Retained on ``hw/{gw}/status``; the LWT publishes ``state="offline"``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    gateway_id: GatewayId
    state: Literal["online", "offline"]
    ts: EpochMs
    buffer_depth: Annotated[int, Field(ge=0)] = 0
    oldest_unsent_age_s: Annotated[float, Field(ge=0)] | None = None
    dropped_readings: Annotated[int, Field(ge=0)] = 0
    meters: dict[str, MeterHealth] = Field(default_factory=dict)


M = TypeVar("M", bound=BaseModel)


def _field_path(error: dict[str, object]) -> str:
    loc = error.get("loc", ())
    assert isinstance(loc, tuple)
    return ".".join(str(part) for part in loc)


def decode(model: type[M], payload: bytes | str) -> M:
    """Parse and validate a JSON payload.

    Raises :class:`InvalidMessage` naming the first offending field; never a pydantic error,
    so callers need to know one exception type.
    """
    try:
        return model.model_validate_json(payload, strict=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidMessage(_field_path(dict(first)), reason) from exc


def encode(message: BaseModel) -> bytes:
    """Compact JSON bytes; ``None`` fields that have defaults are kept explicit."""
    return message.model_dump_json().encode()
