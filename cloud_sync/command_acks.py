"""Command acks from gateways (``hw/{gw}/commands/ack``): record, then PUBACK.

The paho network thread only calls :meth:`CommandAckWorker.offer` (non-blocking). One thread
records each ack in the database and only then sends the MQTT ack, so a crash means the broker
redelivers it; recording is idempotent (a repeat never changes a recorded outcome). Payloads
that fail validation, name another gateway than their topic, or name no command we sent go to
the dead-letter table and are acked (a bad message must not block the session).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from cloud_sync.db.commands_store import AckVerdict
from cloud_sync.errors import BrokerUnavailable
from cloud_sync.ports import DeadLetterIn, InboundMessage, IngestBus
from cloud_sync.worker_thread import MessageWorker
from observability.tracing import span
from protocols import decode, topics
from protocols.commands import CommandAck
from protocols.errors import InvalidMessage

log = logging.getLogger(__name__)
ACK_SUFFIX = "/commands/ack"


class AckStore(Protocol):
    def record_ack(self, gateway_id: str, ack: CommandAck, now_ms: int) -> AckVerdict: ...

    def add_dead_letter(self, dead: DeadLetterIn) -> None: ...


@dataclass
class AckStats:
    received: int = 0
    recorded: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    overflowed: int = 0
    db_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def parse_ack(topic: str, payload: bytes) -> tuple[str, CommandAck] | str:
    """``(gateway_id, ack)`` or the reason to dead-letter it."""
    try:
        parsed = topics.parse(topic)
        ack = decode(CommandAck, payload)
    except InvalidMessage as exc:
        return f"invalid command ack: {exc}"
    gateway_id = getattr(parsed, "gateway_id", None)
    if gateway_id != ack.gateway_id:
        return (f"gateway_id: ack names {ack.gateway_id!r} but arrived on the topic of "
                f"{gateway_id!r}")
    return ack.gateway_id, ack


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class CommandAckWorker(MessageWorker[AckStats]):
    thread_name = "command-acks"

    def __init__(self, store: AckStore, bus: IngestBus, *, queue_size: int = 256,
                 retry_max_s: float = 5.0, now_ms: Callable[[], int] = _wall_ms) -> None:
        super().__init__(queue_size=queue_size, retry_max_s=retry_max_s)
        self._store = store
        self._bus = bus
        self._now_ms = now_ms
        self.stats = AckStats()
        # Called after an ack is recorded (not for repeats), e.g. to time commands; must not
        # raise.
        self.on_recorded: Callable[[CommandAck, int], None] | None = None

    def handle(self, message: InboundMessage) -> None:
        """Record one ack (or dead-letter it), then PUBACK. Raises ``StorageUnavailable``."""
        now = self._now_ms()
        parsed = parse_ack(message.topic, message.payload)
        if isinstance(parsed, tuple):
            gateway_id, ack = parsed
            # The status update continues the trace the gateway's ack carries back.
            with span("command.status_update", traceparent=ack.traceparent,
                      attributes={"command.id": ack.command_id,
                                  "command.outcome": ack.outcome.value}):
                verdict = self._store.record_ack(gateway_id, ack, now)
            if verdict is AckVerdict.RECORDED:
                self.stats.recorded += 1
                if self.on_recorded is not None:
                    self.on_recorded(ack, now)
            elif verdict is AckVerdict.DUPLICATE:
                self.stats.duplicates += 1
            else:
                parsed = f"command_id: {ack.command_id!r} is not a command of device " \
                         f"{ack.device_id!r} on gateway {gateway_id!r}"
        if isinstance(parsed, str):
            log.info("dead-lettering message on %s: %s", message.topic, parsed)
            self._store.add_dead_letter(DeadLetterIn(message.topic, message.payload, parsed, now))
            self.stats.dead_lettered += 1
        try:
            self._bus.ack(message)
        except BrokerUnavailable as exc:  # the broker resends it; recording is idempotent
            log.warning("PUBACK for a command ack not sent (%s); it will be redelivered", exc)
