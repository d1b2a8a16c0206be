"""The running agent: meters → durable buffer → MQTT uplink → cloud ack → buffer delete.

:class:`Agent` wires the adapters (real ones from the config, or injected ones for tests and
the fleet runner) and runs four supervised tasks on one event loop:

- the meter poller (APScheduler jobs) appends readings to the buffer and wakes the drain;
- :class:`TelemetryDrain` publishes batches within the in-flight window and the rate limit,
  and re-sends batches the cloud has not confirmed after ``ack_timeout_s``;
- the inbound task applies ``TelemetryAck`` s: the buffer deletes those seqs (idempotently,
  even for seqs not in flight, e.g. a late ack after a restart);
- the status task publishes the retained ``GatewayStatus`` on every connect and every
  ``status_interval_s``.

Every task waits on events (new readings, ack, connection up) or a deadline; nothing polls.
:func:`run` is ``homewatt-agent run``: it returns 0 after SIGTERM/SIGINT, 1 if start-up fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from edge_agent.backoff import Backoff
from edge_agent.clock import SystemClock
from edge_agent.config import AgentConfig, MqttSettings
from edge_agent.drain import (
    DrainPlanner,
    InFlightBatch,
    PackedBatch,
    RateLimiter,
    Source,
    pack_batch,
    read_limit,
)
from edge_agent.errors import EdgeAgentError
from edge_agent.ports import Clock, ModbusBus
from edge_agent.status import BufferStatsView, offline_status, online_status
from edge_agent.uplink import Message, PahoUplink, Uplink
from protocols import topics
from protocols.errors import InvalidMessage
from protocols.models import MeterHealth, Reading, SeqRange, TelemetryAck, decode, encode

__all__ = ["Agent", "TelemetryBuffer", "TelemetryDrain", "run", "supervise"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1
# A worker that ran this long before failing starts its restart backoff afresh.
HEALTHY_RUN_S = 60.0


class TelemetryBuffer(Protocol):
    """What the runtime needs of ``edge_agent.buffer.SqliteBuffer`` (synchronous, thread-safe)."""

    def open(self) -> object: ...

    def append_seqs(self, readings: Sequence[Reading]) -> range: ...

    def pending(self, after_seq: int = 0, limit: int = 1000) -> list[Reading]: ...

    def newest_pending(self, limit: int) -> list[Reading]: ...

    def confirm(self, ranges: Iterable[SeqRange]) -> int: ...

    def stats(self) -> BufferStatsView: ...

    def close(self) -> None: ...


class Poller(Protocol):
    """What the runtime needs of ``edge_agent.scheduler.MeterPoller``."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, MeterHealth]: ...


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
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _step(self) -> bool:
        """Publish one batch (a due resend first); False when there is nothing to do."""
        due = self.planner.due_resends(self._clock.monotonic())
        if due:
            await self._resend(due[0])
            return True
        if not self.planner.has_slot():
            return False
        picked = await self._next_batch()
        if picked is None:
            return False
        batch, source = picked
        await self._publisher.publish(Message(self._topic, batch.payload))
        self.planner.sent(batch.seqs, source, self._clock.monotonic())
        self.batches_sent += 1
        return True

    async def _next_batch(self) -> tuple[PackedBatch, Source] | None:
        first = self.planner.next_source()
        for source in (first, "backfill" if first == "live" else "live"):
            # Backfill pages wholly in flight move the cursor on; the window bounds the rounds.
            for _ in range(self.planner.max_inflight + 2):
                rows = await self._read(source)
                picked = self.planner.select(rows, source)
                if picked:
                    batch = pack_batch(self._gateway_id, picked, self._max_bytes,
                                       newest_first=source == "live")
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


async def supervise(name: str, work: Callable[[], Awaitable[None]], backoff: Backoff) -> None:
    """Run ``work`` forever: when it fails (or returns), log and restart it after a backoff.

    Cancellation stops it. This is the one place that catches every exception: a failed worker
    must never take the agent down.
    """
    failures = 0
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await work()
            log.error("%s stopped unexpectedly", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", name)
        failures = 1 if loop.time() - started >= HEALTHY_RUN_S else failures + 1
        delay = backoff.delay(failures)
        log.warning("restarting %s in %.1fs (failure %d)", name, delay, failures)
        await asyncio.sleep(delay)


OnReadings = Callable[[list[Reading]], Awaitable[None]]
PollerFactory = Callable[[OnReadings], Poller]


class Agent:
    """One gateway's agent, runnable in-process (``homewatt-agent run``, tests, fleet runner).

    Adapters not passed in are built from ``config`` (bootstrap): ``SqliteBuffer`` at
    ``config.buffer_path``, ``PahoUplink`` for ``config.mqtt``, and a ``MeterPoller`` over
    ``PymodbusBus`` es and gpiozero S0 inputs (an S0 meter whose GPIO is unavailable is left
    out with a warning). ``poller`` is a factory given the readings callback.
    Nothing connects before :meth:`start`.
    """

    def __init__(self, config: AgentConfig, *, uplink: Uplink | None = None,
                 buffer: TelemetryBuffer | None = None, clock: Clock | None = None,
                 poller: PollerFactory | None = None) -> None:
        self.config = config
        self.gateway_id = config.gateway_id
        self.clock: Clock = clock or SystemClock()
        self.buffer = buffer or _sqlite_buffer(config, self.clock)
        self.uplink = uplink or _paho_uplink(config, self.clock)
        self._poller_factory = poller or self._real_poller
        self._publisher = LimitedPublisher(self.uplink, config.mqtt, self.clock)
        self.drain = TelemetryDrain(config.gateway_id, self.buffer, self.uplink,
                                    publisher=self._publisher, settings=config.mqtt,
                                    clock=self.clock)
        self._status_topic = topics.status(config.gateway_id)
        self._ack_topic = topics.telemetry_ack(config.gateway_id)
        self._poller: Poller | None = None
        self._buses: Mapping[str, ModbusBus] = {}
        self._s0_closers: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.invalid_acks = 0
        self.storage_errors = 0

    async def start(self) -> None:
        """Open the buffer, connect (in the background) and start polling and draining.

        Raises ``EdgeAgentError`` if the buffer cannot be opened (e.g. in use by another
        process); the broker being down is not an error (the uplink keeps retrying).
        """
        report = await asyncio.to_thread(self.buffer.open)
        log.info("telemetry buffer open: %s", report)
        await self.uplink.start()
        self._poller = self._poller_factory(self.ingest)
        self._poller.start()
        restart = Backoff(1.0, 60.0)
        for name, work in (("telemetry drain", self.drain.run), ("inbound", self._inbound_loop),
                           ("status", self._status_loop)):
            self._tasks.append(asyncio.create_task(supervise(name, work, restart), name=name))

    async def stop(self) -> None:
        """Stop polling, publish the retained offline status, disconnect, close the buffer."""
        if self._poller is not None:
            await self._poller.stop()
            self._poller = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        farewell = offline_status(self.gateway_id, self.clock.now_ms())
        await self.uplink.stop(Message(self._status_topic, encode(farewell), retain=True))
        for bus in self._buses.values():
            await bus.close()
        for close in self._s0_closers:
            close()
        await asyncio.to_thread(self.buffer.close)

    async def ingest(self, readings: list[Reading]) -> None:
        """Append readings to the buffer (durably) and wake the drain: the poller's callback.

        A storage failure is logged and counted; it never stops the poller.
        """
        try:
            await asyncio.to_thread(self.buffer.append_seqs, readings)
        except EdgeAgentError as exc:
            self.storage_errors += 1
            log.error("could not buffer %d readings: %s", len(readings), exc)
            return
        self.drain.wake()

    async def publish_status(self) -> None:
        stats = await asyncio.to_thread(self.buffer.stats)
        health = self._poller.health() if self._poller is not None else {}
        status = online_status(self.gateway_id, stats, health, self.clock.now_ms())
        await self._publisher.publish(Message(self._status_topic, encode(status), retain=True))

    async def _status_loop(self) -> None:
        while True:
            await self.uplink.wait_connected()
            await self.publish_status()
            # A disconnect ends the wait early, so the next connect publishes at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.uplink.wait_disconnected(),
                                       self.config.status_interval_s)

    async def _inbound_loop(self) -> None:
        while True:
            message = await self.uplink.receive()
            if message.topic != self._ack_topic:
                log.debug("ignoring message on %s", message.topic)
                continue
            try:
                ack = decode(TelemetryAck, message.payload)
            except InvalidMessage as exc:
                self.invalid_acks += 1
                log.warning("invalid telemetry ack ignored (%d so far): %s", self.invalid_acks,
                            exc)
                continue
            if ack.gateway_id != self.gateway_id:
                log.warning("telemetry ack for gateway %s ignored", ack.gateway_id)
                continue
            await self.drain.apply_ack(ack)

    def _real_poller(self, on_readings: OnReadings) -> Poller:
        from edge_agent.modbus_bus import build_buses
        from edge_agent.s0_input import GpiozeroPulseInput
        from edge_agent.scheduler import SyncReadable, build_poller

        self._buses = build_buses(self.config.buses)
        s0_inputs: dict[str, SyncReadable] = {}
        for meter in self.config.meters:
            if meter.model != "s0":
                continue
            try:
                pulse = GpiozeroPulseInput(meter, clock=self.clock, state_dir=self.config.data_dir)
            except EdgeAgentError as exc:
                log.warning("S0 meter %s left out: %s", meter.id, exc)
                continue
            s0_inputs[meter.id] = pulse
            self._s0_closers.append(pulse.close)
        return build_poller(self.config, self._buses, on_readings, self.clock,
                            s0_inputs=s0_inputs)


def _sqlite_buffer(config: AgentConfig, clock: Clock) -> TelemetryBuffer:
    from edge_agent.buffer import SqliteBuffer

    return SqliteBuffer(config.buffer_path, max_bytes=config.buffer.max_bytes,
                        thin_to_minutes=config.buffer.thin_to_minutes, clock=clock)


def _paho_uplink(config: AgentConfig, clock: Clock) -> Uplink:
    gateway_id = config.gateway_id

    def will() -> Message:
        status = offline_status(gateway_id, clock.now_ms())
        return Message(topics.status(gateway_id), encode(status), retain=True)

    return PahoUplink(config.mqtt, client_id=gateway_id,
                      subscriptions=[topics.telemetry_ack(gateway_id)], will=will)


def run(config: AgentConfig) -> int:
    """``homewatt-agent run``: run until SIGTERM/SIGINT, then stop cleanly and return 0.

    Returns 1 if the agent cannot start (buffer in use or unreadable, bad TLS files).
    """
    return asyncio.run(_run(config))


async def _run(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        agent = Agent(config)
    except EdgeAgentError as exc:
        log.error("agent cannot start: %s", exc)
        return EXIT_FAILED
    try:
        await agent.start()
    except EdgeAgentError as exc:
        log.error("agent cannot start: %s", exc)
        await agent.stop()
        return EXIT_FAILED
    log.info("agent %s running; SIGTERM or SIGINT stops it", config.gateway_id)
    try:
        await stop.wait()
    finally:
        log.info("agent %s stopping", config.gateway_id)
        await agent.stop()
    return EXIT_OK
