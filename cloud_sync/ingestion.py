"""The telemetry ingestion worker: bounded queue in, grouped DB transactions, acks after commit.

The paho network thread only calls :meth:`IngestionWorker.offer` (a non-blocking put). One
writer thread drains the queue, groups messages (up to ``max_readings`` readings or
``max_wait_s`` after the first one), stores the whole group in one transaction, then publishes
a ``TelemetryAck`` per gateway and only then sends the MQTT PUBACKs. If the database fails the
group is retried with backoff and nothing is acked, so a crash at any point means redelivery
by the broker, never loss; the store's ``ON CONFLICT DO NOTHING`` makes redelivery harmless.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from cloud_sync.ack_ranges import compact
from cloud_sync.classify import Rejection, check_registered, parse_telemetry
from cloud_sync.errors import BrokerUnavailable, StorageUnavailable
from cloud_sync.ports import DeadLetterIn, InboundMessage, IngestBus, TelemetryStore
from cloud_sync.worker_thread import WorkerThread
from observability.tracing import span
from protocols import TelemetryAck, TelemetryBatch, encode, topics

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    """Counters an operator reads at ``GET /api/v1/ingestion/stats``; none is ever reset."""

    received: int = 0
    overflowed: int = 0  # offered while the queue was full: not acked, redelivered later
    redelivered_copies: int = 0  # broker resent a message we already hold: skipped
    groups: int = 0
    stored_readings: int = 0
    duplicate_readings: int = 0
    dead_lettered: int = 0
    acked_messages: int = 0
    acks_published: int = 0
    ack_publish_failures: int = 0
    db_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Parsed:
    message: InboundMessage
    received_at: int
    result: TelemetryBatch | Rejection


@dataclass
class _Group:
    items: list[_Parsed] = field(default_factory=list)
    readings: int = 0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class IngestionWorker(WorkerThread):
    """Owns the queue and the writer thread. ``stop`` ends after the current group; un-acked
    messages stay with the broker."""

    thread_name = "ingestion-writer"

    def __init__(self, store: TelemetryStore, bus: IngestBus, *, queue_size: int = 64,
                 max_readings: int = 5000, max_wait_s: float = 0.05, retry_max_s: float = 5.0,
                 now_ms: Callable[[], int] = _wall_ms) -> None:
        super().__init__()
        self._store = store
        self._bus = bus
        # None is the wake-up ``stop`` puts in, so a waiting worker stops at once
        self._queue: queue.Queue[tuple[InboundMessage, int] | None] = queue.Queue(
            maxsize=queue_size)
        self._queue_size = queue_size
        self._max_readings = max_readings
        self._max_wait_s = max_wait_s
        self._retry_max_s = retry_max_s
        self._now_ms = now_ms
        self._known: set[str] = set()
        # mids received and not yet PUBACKed: a redelivered copy (dup) of one of them is
        # skipped because the original's ack settles it. Acks and TelemetryAcks that could
        # not be sent (broker down) are kept and sent once it is back.
        self._pending: set[int] = set()
        self._unsent_acks: list[InboundMessage] = []
        self._unsent_publishes: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.stats = IngestStats()

    # -- called from the MQTT network thread ------------------------------------------------

    def offer(self, message: InboundMessage) -> bool:
        """Queue a message without blocking; ``False`` (counted) when the queue is full.

        A refused QoS 1 message stays un-acked; once the queue has room again the worker asks
        the bus to resume the session so the broker resends it (backpressure, not loss).
        """
        with self._lock:
            if message.dup and message.qos and message.mid in self._pending:
                self.stats.redelivered_copies += 1
                return True
        try:
            self._queue.put_nowait((message, self._now_ms()))
        except queue.Full:
            with self._lock:
                self.stats.overflowed += 1
            log.debug("ingestion queue full (%d): message %d left un-acked for redelivery",
                      self._queue_size, message.mid)
            return False
        with self._lock:
            self.stats.received += 1
            if message.qos:
                self._pending.add(message.mid)
        return True

    # -- lifecycle ---------------------------------------------------------------------------


    @property
    def queue_depth(self) -> int:
        """Received messages not yet stored (for metrics)."""
        return self._queue.qsize()



    def step(self, wait_s: float = 0.5) -> int:
        """Collect one group (waiting up to ``wait_s`` for its first message) and store it,
        retrying until it is stored or the worker stops. Returns the messages handled."""
        self._flush_unsent()
        group = self._collect(wait_s)
        if group.items:
            self._commit_with_retry(group)
        if self._queue.qsize() <= self._queue_size // 2:
            self._bus.redeliver_refused()
        return len(group.items)

    def _wake_for_stop(self) -> None:
        with contextlib.suppress(queue.Full):  # full: the worker is not waiting anyway
            self._queue.put_nowait(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # supervisor: one bad group must not kill ingestion
                log.exception("ingestion writer failed; continuing")
                self._stop.wait(1.0)

    # -- grouping ----------------------------------------------------------------------------

    def _collect(self, wait_s: float) -> _Group:
        group = _Group()
        try:
            first = self._queue.get(timeout=wait_s)
        except queue.Empty:
            return group
        if first is None:
            return group
        self._add(group, *first)
        deadline = time.monotonic() + self._max_wait_s
        # The broker sends at most queue_size un-acked messages: once the group holds that
        # many, nothing more can arrive until we ack, so waiting would only stall.
        while group.readings < self._max_readings and len(group.items) < self._queue_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                break
            self._add(group, *item)
        return group

    @staticmethod
    def _add(group: _Group, message: InboundMessage, received_at: int) -> None:
        result = parse_telemetry(message.topic, message.payload)
        group.items.append(_Parsed(message, received_at, result))
        if isinstance(result, TelemetryBatch):
            group.readings += len(result.readings)

    # -- commit ------------------------------------------------------------------------------

    def _commit_with_retry(self, group: _Group) -> None:
        delay = 0.05
        while True:
            try:
                self.commit(group.items)
                return
            except StorageUnavailable as exc:
                with self._lock:
                    self.stats.db_failures += 1
                log.warning("storing %d messages failed (%s); retrying in %.2fs, not acked",
                            len(group.items), exc, delay)
            if self._stop.wait(delay):
                return  # shutting down: the broker redelivers the un-acked messages
            delay = min(delay * 2, self._retry_max_s)

    def commit(self, items: Sequence[_Parsed]) -> None:
        """Store one group in one transaction, then ack; raises ``StorageUnavailable``."""
        batches, dead = self._split(items)
        with contextlib.ExitStack() as traced:
            # A sampled batch carries the agent's traceparent: its store span joins that trace.
            for batch in batches:
                if batch.traceparent is not None:
                    traced.enter_context(span("telemetry.store", traceparent=batch.traceparent,
                                              attributes={"gateway": batch.gateway_id,
                                                          "readings": len(batch.readings)}))
            inserted = self._store.ingest(batches, dead)
        total = sum(len(b.readings) for b in batches)
        with self._lock:
            self.stats.groups += 1
            self.stats.stored_readings += inserted
            self.stats.duplicate_readings += total - inserted
            self.stats.dead_lettered += len(dead)
        self._publish_acks(batches)
        self._send_acks([item.message for item in items])

    def _send_acks(self, messages: Sequence[InboundMessage]) -> None:
        for index, message in enumerate(messages):
            try:
                self._bus.ack(message)
            except BrokerUnavailable as exc:
                log.warning("%d PUBACKs held until the broker is back: %s",
                            len(messages) - index, exc)
                self._unsent_acks.extend(messages[index:])
                return
            with self._lock:
                self._pending.discard(message.mid)
                self.stats.acked_messages += 1

    def _flush_unsent(self) -> None:
        if not (self._unsent_acks or self._unsent_publishes) or not self._bus.is_connected():
            return
        publishes, self._unsent_publishes = self._unsent_publishes, []
        for topic, payload in publishes:
            self._publish(topic, payload)
        acks, self._unsent_acks = self._unsent_acks, []
        self._send_acks(acks)

    def _split(self, items: Sequence[_Parsed]) -> tuple[list[TelemetryBatch], list[DeadLetterIn]]:
        wanted = {i.result.gateway_id for i in items if isinstance(i.result, TelemetryBatch)}
        missing = wanted - self._known
        if missing:
            self._known |= self._store.known_gateways(missing)
        batches: list[TelemetryBatch] = []
        dead: list[DeadLetterIn] = []
        for item in items:
            verdict = item.result
            if isinstance(verdict, TelemetryBatch):
                rejection = check_registered(verdict, self._known)
                if rejection is None:
                    batches.append(verdict)
                    continue
                verdict = rejection
            log.info("dead-lettering message on %s: %s", item.message.topic, verdict.reason)
            dead.append(DeadLetterIn(item.message.topic, item.message.payload,
                                     verdict.reason, item.received_at))
        return batches, dead

    def _publish_acks(self, batches: Sequence[TelemetryBatch]) -> None:
        # Every seq of an accepted batch is in the DB now, inserted or already present, so
        # duplicates are acked too (otherwise the edge would resend them forever).
        seqs: dict[str, list[int]] = defaultdict(list)
        for batch in batches:
            seqs[batch.gateway_id].extend(r.seq for r in batch.readings if r.seq is not None)
        for gateway_id, gw_seqs in seqs.items():
            ack = TelemetryAck(gateway_id=gateway_id, ranges=compact(gw_seqs))
            self._publish(topics.telemetry_ack(gateway_id), encode(ack))

    def _publish(self, topic: str, payload: bytes) -> None:
        try:
            self._bus.publish(topic, payload)
        except BrokerUnavailable as exc:
            with self._lock:
                self.stats.ack_publish_failures += 1
            log.warning("ack on %s held until the broker is back: %s", topic, exc)
            self._unsent_publishes.append((topic, payload))
            return
        with self._lock:
            self.stats.acks_published += 1

    def forget_gateways(self) -> None:
        """Drop the registry cache (after a gateway is removed)."""
        self._known.clear()
