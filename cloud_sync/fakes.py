"""In-memory fakes of the ports, for unit tests and demos. Behave like the real adapters:
idempotent on (gateway_id, seq), one commit per ``ingest``, acks recorded in order."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from cloud_sync.errors import BrokerUnavailable, StorageUnavailable
from cloud_sync.ports import DeadLetterIn, InboundMessage, StoredReading
from protocols import TelemetryBatch


class FakeTelemetryStore:
    """``fail`` (a callable returning True) makes the next call raise ``StorageUnavailable``."""

    def __init__(self, gateways: Collection[str] = (), fail: Callable[[], bool] | None = None):
        self.gateways = set(gateways)
        self.rows: dict[tuple[str, int], StoredReading] = {}
        self.dead: list[DeadLetterIn] = []
        self.commits = 0
        self._fail = fail or (lambda: False)

    def _check(self) -> None:
        if self._fail():
            raise StorageUnavailable("fake outage")

    def known_gateways(self, gateway_ids: Collection[str]) -> set[str]:
        self._check()
        return self.gateways & set(gateway_ids)

    def ingest(self, batches: Sequence[TelemetryBatch],
               dead_letters: Sequence[DeadLetterIn]) -> int:
        self._check()
        inserted = 0
        for batch in batches:
            for r in batch.readings:
                assert r.seq is not None
                key = (batch.gateway_id, r.seq)
                if key not in self.rows:
                    self.rows[key] = StoredReading(batch.gateway_id, r.seq, r.meter_id, r.channel,
                                                   r.value, r.unit.value, r.ts, r.quality.value)
                    inserted += 1
        self.dead.extend(dead_letters)
        self.commits += 1
        return inserted

    def ping(self, timeout_s: float) -> None:
        self._check()


class FakeIngestBus:
    """Records acks and publishes; ``connected=False`` makes calls raise ``BrokerUnavailable``."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.published: list[tuple[str, bytes]] = []
        self.connected = True
        self.redelivery_requests = 0

    def ack(self, message: InboundMessage) -> None:
        if not self.connected:
            raise BrokerUnavailable("fake broker down")
        self.acked.append(message.mid)

    def publish(self, topic: str, payload: bytes) -> None:
        if not self.connected:
            raise BrokerUnavailable("fake broker down")
        self.published.append((topic, payload))

    def is_connected(self) -> bool:
        return self.connected

    def redeliver_refused(self) -> None:
        self.redelivery_requests += 1
