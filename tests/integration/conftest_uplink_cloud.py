"""A stand-in for cloud ingestion over a real broker, and an event-driven wait for tests.

``FakeCloud`` is a plain paho subscriber: it records every telemetry seq it receives
(duplicates included, as a real receiver would see them) and, while ``acking``, answers each
batch with a ``TelemetryAck`` naming its seqs, as cloud ingestion does after its DB commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocols import topics
from protocols.models import SeqRange, TelemetryAck, TelemetryBatch, decode, encode


class Changes:
    """Lets a test await a condition that other threads make true, without sleeps."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Callable from any thread."""
        with contextlib.suppress(RuntimeError):  # RuntimeError: loop closed after the test
            self._loop.call_soon_threadsafe(self._event.set)

    async def until(self, predicate: Callable[[], bool], timeout: float, *,
                    also_every: float | None = None) -> None:
        """Wait until ``predicate()``; re-check on each notify (or every ``also_every`` s for
        state nobody notifies about, e.g. a buffer)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._event.clear()
                if predicate():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), also_every)


def ranges_of(seqs: list[int]) -> list[SeqRange]:
    out: list[SeqRange] = []
    for seq in sorted(set(seqs)):
        if out and out[-1].last == seq - 1:
            out[-1] = SeqRange(first=out[-1].first, last=seq)
        else:
            out.append(SeqRange(first=seq, last=seq))
    return out


class FakeCloud:
    def __init__(self, port: int, gateway_id: str, changes: Changes, *, acking: bool = True,
                 watch_status: bool = False) -> None:
        self.gateway_id = gateway_id
        self.acking = acking
        self.changes = changes
        self.received: Counter[int] = Counter()
        self.batches = 0
        self.statuses: list[bytes] = []
        self._lock = threading.Lock()
        self._subs = [topics.telemetry(gateway_id)]
        if watch_status:
            self._subs.append(topics.status(gateway_id))
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"cloud-{uuid.uuid4().hex[:8]}", clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self._pending_subacks: set[int] = set()
        self._subscribed = False
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)

    def __enter__(self) -> FakeCloud:
        self.client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        with self._lock:
            self._subscribed = False
            for topic in self._subs:
                _, mid = client.subscribe(topic, qos=1)
                assert mid is not None
                self._pending_subacks.add(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_codes: object, properties: object) -> None:
        with self._lock:
            self._pending_subacks.discard(mid)
            self._subscribed = not self._pending_subacks
        self.changes.notify()

    def ready(self) -> bool:
        """Connected and every subscription acknowledged: publishes from now on reach us."""
        with self._lock:
            return self._subscribed and self.client.is_connected()

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/status"):
            with self._lock:
                self.statuses.append(bytes(message.payload))
            self.changes.notify()
            return
        batch = decode(TelemetryBatch, bytes(message.payload))
        seqs = [r.seq for r in batch.readings if r.seq is not None]
        with self._lock:
            self.received.update(seqs)
            self.batches += 1
        if self.acking:
            ack = TelemetryAck(gateway_id=batch.gateway_id, ranges=ranges_of(seqs))
            client.publish(topics.telemetry_ack(batch.gateway_id), encode(ack), qos=1)
        self.changes.notify()

    def distinct(self) -> set[int]:
        with self._lock:
            return set(self.received)
