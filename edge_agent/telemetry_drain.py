"""Publishing the telemetry buffer: :class:`TelemetryDrain` and the :class:`LimitedPublisher`
every publish of the agent goes through.

The decisions (which batch next, the in-flight window, resends, the token bucket) are pure
code in :mod:`edge_agent.drain`; this module does the I/O around them: reads the buffer on a
worker thread, publishes through the uplink, and waits on events or the next resend deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from edge_agent.config import MqttSettings
from edge_agent.drain import (
    DrainPlanner,
    InFlightBatch,
    PackedBatch,
    RateLimiter,
    Source,
    pack_batch,
    read_limit,
)
from edge_agent.ports import Clock, Message, TelemetryBuffer, Uplink
from observability.tracing import current_traceparent, span, tracing_enabled
from protocols import topics
from protocols.models import Reading, TelemetryAck

TRACE_ONE_IN = 100  # telemetry batches per traced batch, when tracing is on

__all__ = ["LimitedPublisher", "TelemetryDrain"]

log = logging.getLogger(__name__)


class LimitedPublisher:
    """Every publish of the agent goes through one rate limiter (AWS IoT Core counts them all
    per connection); waits are plain timers until the token bucket allows the publish."""

    def __init__(self, uplink: Uplink, settings: MqttSettings, clock: Clock) -> None:
        self._uplink = uplink
        self._clock = clock
        self._limiter = RateLimiter(settings.publish_rate_per_s, settings.publish_bytes_per_s,
                                    max_publish_bytes=settings.batch_max_bytes,
                                    now=clock.monotonic())
        self._lock = asyncio.Lock()

    async def publish(self, message: Message) -> None:
        async with self._lock:
            size = len(message.payload)
            wait = self._limiter.delay(size, self._clock.monotonic())
            if wait > 0:
                # The delay is exact; a timer firing a hair early only leaves a tiny debt in
                # the bucket, which the next publish pays.
                await asyncio.sleep(wait)
            self._limiter.consume(size, self._clock.monotonic())
            await self._uplink.publish(message)


class TelemetryDrain:
    """Publishes buffered readings; the decisions are :mod:`edge_agent.drain`'s."""

    def __init__(self, gateway_id: str, buffer: TelemetryBuffer, uplink: Uplink, *,
                 publisher: LimitedPublisher, settings: MqttSettings, clock: Clock) -> None:
        self._gateway_id = gateway_id
        self._topic = topics.telemetry(gateway_id)
        self._buffer = buffer
        self._uplink = uplink
        self._publisher = publisher
        self._clock = clock
        self._max_bytes = settings.batch_max_bytes
        self._limit = read_limit(settings.batch_max_bytes)
        self.planner = DrainPlanner(settings.max_inflight_batches, settings.ack_timeout_s)
        self._wake = asyncio.Event()
        self.batches_sent = 0
        self.batches_resent = 0

    def wake(self) -> None:
        """New readings, an ack or a reconnect: look again now."""
        self._wake.set()

    def rewind(self, seq: int) -> None:
        """Held readings from ``seq`` on were released: send them too (see ``DrainPlanner``)."""
        self.planner.rewind(seq)
        self.wake()

    async def run(self) -> None:
        while True:
            await self._uplink.wait_connected()
            self._wake.clear()  # before looking, so a wake during the step is not lost
            if not await self._step():
                await self._idle()

    async def _idle(self) -> None:
        deadline = self.planner.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - self._clock.monotonic())
        with contextlib.suppress(TimeoutError):  # timed out: a resend is due
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _step(self) -> bool:
        """Publish one batch (a due resend first); False when there is nothing to do."""
        due = self.planner.due_resends(self._clock.monotonic())
        if due:
            await self._resend(due[0])
            return True
        if not self.planner.has_slot():
            return False
        # One batch in TRACE_ONE_IN carries a trace (when tracing is on), so the cloud's store
        # span joins it: enough to see telemetry latency without a span per publish.
        if tracing_enabled() and self.batches_sent % TRACE_ONE_IN == 0:
            with span("telemetry.publish", attributes={"gateway": self._gateway_id}):
                return await self._publish_next(current_traceparent())
        return await self._publish_next(None)

    async def _publish_next(self, traceparent: str | None) -> bool:
        picked = await self._next_batch(traceparent)
        if picked is None:
            return False
        batch, source = picked
        await self._publisher.publish(Message(self._topic, batch.payload))
        self.planner.sent(batch.seqs, source, self._clock.monotonic())
        self.batches_sent += 1
        return True

    async def _next_batch(self, traceparent: str | None = None
                          ) -> tuple[PackedBatch, Source] | None:
        first = self.planner.next_source()
        for source in (first, "backfill" if first == "live" else "live"):
            # Backfill pages wholly in flight move the cursor on; the window bounds the rounds.
            for _ in range(self.planner.max_inflight + 2):
                rows = await self._read(source)
                picked = self.planner.select(rows, source)
                if picked:
                    batch = pack_batch(self._gateway_id, picked, self._max_bytes,
                                       newest_first=source == "live", traceparent=traceparent)
                    assert batch is not None
                    return batch, source
                if source == "live" or len(rows) < self._limit:
                    break
        return None

    async def _read(self, source: Source) -> list[Reading]:
        if source == "live":
            return await asyncio.to_thread(self._buffer.newest_pending, self._limit)
        return await asyncio.to_thread(self._buffer.pending, self.planner.backfill_cursor,
                                       self._limit)

    async def _resend(self, batch: InFlightBatch) -> None:
        span = batch.last - batch.first + 1
        rows = await asyncio.to_thread(self._buffer.pending, batch.first - 1, span)
        rows = [r for r in rows if r.seq in batch.seqs]
        packed = pack_batch(self._gateway_id, rows, self._max_bytes)
        if packed is not None:
            await self._publisher.publish(Message(self._topic, packed.payload))
            self.batches_resent += 1
            log.info("re-sent %d readings (seq %d..%d) unconfirmed after %.0fs (attempt %d)",
                     len(packed.seqs), packed.first, packed.last, self.planner.ack_timeout_s,
                     batch.attempts + 1)
        self.planner.resent(batch.batch_id, [] if packed is None else packed.seqs,
                            self._clock.monotonic())

    async def apply_ack(self, ack: TelemetryAck) -> int:
        """Delete the acked seqs from the buffer, then release them from the window."""
        removed = await asyncio.to_thread(self._buffer.confirm, ack.ranges)
        self.planner.acked(ack.ranges)
        self.wake()
        return removed
