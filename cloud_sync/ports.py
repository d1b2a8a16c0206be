"""The narrow interfaces between the cloud service's logic and its I/O.

Real adapters: :class:`cloud_sync.db.store.SqlTelemetryStore` (SQLAlchemy) and
:class:`cloud_sync.mqtt.PahoIngestBus` (paho-mqtt). Fakes beside them live in
:mod:`cloud_sync.fakes`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocols import TelemetryBatch


@dataclass(frozen=True)
class InboundMessage:
    """One MQTT message as received; ``mid`` and ``qos`` are what an ack needs."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool = False


@dataclass(frozen=True)
class DeadLetterIn:
    """A payload to park: raw bytes, where it came from, and why it was refused."""

    topic: str
    payload: bytes
    reason: str
    received_at: int  # epoch ms


@dataclass(frozen=True)
class StoredReading:
    gateway_id: str
    seq: int
    meter_id: str
    channel: str
    value: float | None
    unit: str
    ts: int
    quality: str


@dataclass(frozen=True)
class DeadLetter:
    id: int
    received_at: int
    topic: str
    payload: bytes
    reason: str
    replayed_at: int | None


@dataclass(frozen=True)
class ReadingsQuery:
    """Filters of ``GET .../readings``; ``after`` is the keyset ``(ts, seq)`` of the last row."""

    gateway_id: str
    meter_id: str | None = None
    channel: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    after: tuple[int, int] | None = None
    limit: int = 1000


class TelemetryStore(Protocol):
    """What the ingestion worker needs. Every method raises ``StorageUnavailable`` when the
    database is down, slow past its timeout, or its breaker is open; nothing else leaks."""

    def known_gateways(self, gateway_ids: Collection[str]) -> set[str]:
        """The subset of ``gateway_ids`` that is registered."""
        ...

    def ingest(self, batches: Sequence[TelemetryBatch],
               dead_letters: Sequence[DeadLetterIn]) -> int:
        """Store readings (idempotent on (gateway_id, seq)) and dead letters in ONE transaction.

        Returns the number of rows newly inserted (duplicates are skipped, not errors).
        """
        ...

    def ping(self, timeout_s: float) -> None:
        """Return if the database answers within ``timeout_s``."""
        ...


class TelemetryQueries(Protocol):
    """What the REST API reads and changes."""

    def gateway_exists(self, gateway_id: str) -> bool: ...

    def add_gateway(self, gateway_id: str) -> bool:
        """Register a gateway; ``False`` when it already existed."""
        ...

    def readings(self, query: ReadingsQuery) -> list[StoredReading]: ...

    def latest(self, gateway_id: str) -> list[StoredReading]:
        """The newest reading per (meter_id, channel)."""
        ...

    def dead_letters(self, after_id: int | None, limit: int) -> list[DeadLetter]: ...

    def dead_letter(self, dead_letter_id: int) -> DeadLetter | None: ...

    def replay_stored(self, dead_letter_id: int, batch: TelemetryBatch, now_ms: int) -> int:
        """Store ``batch`` and mark the dead letter replayed, in one transaction."""
        ...

    def set_dead_letter_reason(self, dead_letter_id: int, reason: str) -> None: ...


class ReplyBus(Protocol):
    """What an MQTT request service (shadows, jobs, provisioning) needs of the broker: reply,
    then PUBACK the request. Calls never block on the network."""

    def ack(self, message: InboundMessage) -> None:
        """Send the PUBACK; only after the message's data is committed."""
        ...

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1 publish; raises ``BrokerUnavailable`` when not connected."""
        ...


class IngestBus(ReplyBus, Protocol):
    """The broker side of ingestion."""

    def is_connected(self) -> bool: ...

    def redeliver_refused(self) -> None:
        """Make the broker resend messages ``offer`` refused (by resuming the session)."""
        ...


# -- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A registered device: which gateway drives it and the actions it accepts.

    ``id`` is the registry's (the API path); ``local_id`` is the gateway's name for it: the
    ``meter_id`` of its readings and the ``device_id`` on the command wire. ``kind`` is
    ``meter`` or ``actuator``; meters have a ``role`` (``grid``, ``pv``, ``load``). ``home_id``
    is its gateway's home (``None`` while the gateway is unassigned).
    """

    id: str
    gateway_id: str
    kind: str
    capabilities: list[str]
    created_at: int
    local_id: str = ""
    role: str | None = None
    model: str | None = None
    name: str | None = None
    home_id: str | None = None

    def __post_init__(self) -> None:
        if not self.local_id:  # a device registered before local ids: the id is the wire id
            object.__setattr__(self, "local_id", self.id)


@dataclass(frozen=True)
class Home:
    id: str
    name: str
    timezone: str  # IANA name; analytics buckets days in it
    created_at: int


@dataclass(frozen=True)
class Gateway:
    id: str  # the AWS IoT thing name
    home_id: str | None
    name: str | None
    created_at: int


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str | None
    operator: bool
    created_at: int


@dataclass(frozen=True)
class StoredCommand:
    """One command row as the API reports it (times in epoch ms, ``None`` until reached)."""

    command_id: str
    device_id: str  # the registry's id (the API path)
    gateway_id: str
    local_id: str  # the device's id on its gateway: the command wire's device_id
    action: str
    params: dict[str, float | int | bool | str]
    priority: str
    status: str
    created_at: int
    expires_at: int
    sent_at: int | None
    delivered_at: int | None
    completed_at: int | None
    reason: str | None
    result: dict[str, float | int | bool | str] | None
    attempts: int
    request_hash: str
    traceparent: str | None = None  # W3C trace context of the creating request, if traced


class PublishHandle(Protocol):
    def wait(self, timeout_s: float) -> bool:
        """True once the broker PUBACKed; False on timeout or a lost connection."""
        ...


class CommandBus(Protocol):
    """What the dispatcher needs from the broker."""

    def publish_tracked(self, topic: str, payload: bytes) -> PublishHandle:
        """Queue a QoS 1 publish; raises ``BrokerUnavailable`` when not connected."""
        ...


class OutboxStore(Protocol):
    """What the dispatcher needs from the database (see :class:`cloud_sync.db.outbox_store`)."""

    def dispatch_due(self, now_ms: Callable[[], int], limit: int, redelivery_ms: int,
                     publish: Callable[[Sequence[StoredCommand]], list[str]],
                     ) -> tuple[int, int]:
        """Claim due rows, publish them, mark the confirmed ones sent: ``(claimed, confirmed)``."""
        ...

    def next_due_ms(self) -> int | None: ...

    def expire_due(self, now: int, limit: int = 500) -> int: ...
