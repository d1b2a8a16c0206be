"""Polling every meter on its own schedule, with per-device backoff and health.

:class:`MeterPoller` is the policy (which meter is due, what a failure means, health) and is
driven directly by unit tests; :meth:`MeterPoller.start` puts one APScheduler 3.x job per
meter on the running asyncio loop. Jobs run concurrently, so a slow meter never delays meters
on other buses; meters on one bus still take turns through that bus's lock.

A meter that stops answering backs off exponentially (first retry after one interval, then
doubling, capped at ``backoff_max_s``): while backing off its job returns without touching the
bus, so a dead device costs one timeout per backoff period. After the device answers again it
is read within ``backoff_max_s + interval_s`` of coming back.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

# APScheduler 3.x ships no type information.
from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from edge_agent.backoff import Backoff, DeviceState
from edge_agent.config import AgentConfig
from edge_agent.errors import EdgeAgentError
from edge_agent.meter_reader import build_readers
from edge_agent.ports import Clock, MeterSource, ModbusBus, OnReadings
from edge_agent.supervise import cancel_and_wait
from protocols.models import MeterHealth, Reading

log = logging.getLogger(__name__)

# (meter id, read duration in seconds, succeeded)
ReadObserver = Callable[[str, float, bool], None]


class SyncReadable(Protocol):
    """A meter whose ``read`` is a quick in-memory call (an S0 pulse counter)."""

    def read(self) -> list[Reading]: ...


class SyncMeterSource:
    """Adapts a synchronous reader (e.g. ``GpiozeroPulseInput``) to :class:`MeterSource`."""

    def __init__(self, meter_id: str, reader: SyncReadable) -> None:
        self.meter_id = meter_id
        self.last_error: str | None = None
        self._reader = reader

    async def read(self) -> list[Reading]:
        try:
            readings = self._reader.read()
        except EdgeAgentError as exc:
            self.last_error = str(exc)
            return []
        self.last_error = None
        return readings


@dataclass
class _Polled:
    source: MeterSource
    interval_s: float
    state: DeviceState
    polls: int = 0  # attempts that reached the device (skipped backoff ticks not counted)


class MeterPoller:
    """Polls meter sources, tracks their health and hands readings to ``on_readings``."""

    def __init__(
        self,
        meters: Sequence[tuple[MeterSource, float]],
        on_readings: OnReadings,
        clock: Clock,
        *,
        backoff_max_s: float = 60.0,
        random: Callable[[], float] = _random.random,
        read_observer: ReadObserver | None = None,
    ) -> None:
        """``meters`` pairs each source with its poll interval in seconds; ``read_observer``
        is told every poll that reached a device (metrics)."""
        self._observe = read_observer
        self._meters: dict[str, _Polled] = {}
        for source, interval_s in meters:
            backoff = Backoff(initial_s=interval_s, max_s=max(backoff_max_s, interval_s),
                              random=random)
            self._meters[source.meter_id] = _Polled(source, interval_s, DeviceState(backoff))
        self._on_readings = on_readings
        self._clock = clock
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()

    @property
    def meter_ids(self) -> list[str]:
        return list(self._meters)

    def health(self) -> dict[str, MeterHealth]:
        """Per-meter health for the gateway status (ok / degraded / offline)."""
        return {meter_id: polled.state.health() for meter_id, polled in self._meters.items()}

    def poll_count(self, meter_id: str) -> int:
        """How many polls reached the device (for tests and diagnostics)."""
        return self._meters[meter_id].polls

    async def poll(self, meter_id: str) -> bool:
        """Poll one meter if it is due; return whether it was polled.

        Readings (ERROR ones included) go to ``on_readings``; a failure never propagates.
        """
        polled = self._meters[meter_id]
        if not polled.state.due(self._clock.monotonic()):
            return False
        polled.polls += 1
        readings: list[Reading] = []
        started = self._clock.monotonic()
        try:
            readings = await polled.source.read()
            error = polled.source.last_error
        except EdgeAgentError as exc:
            error = str(exc)
        if self._observe is not None:
            self._observe(meter_id, self._clock.monotonic() - started, error is None)
        if error is None:
            polled.state.succeeded(self._clock.now_ms())
        else:
            self._record_failure(meter_id, polled, error)
        if readings:
            await self._on_readings(readings)
        return True

    def _record_failure(self, meter_id: str, polled: _Polled, error: str) -> None:
        first = polled.state.consecutive_failures == 0
        retry_at = polled.state.failed(self._clock.monotonic(), error)
        wait = retry_at - self._clock.monotonic()
        # A repeating device fault is logged once, then at debug.
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "meter %s: read failed (%s); retry in %.1fs", meter_id, error, wait)

    def start(self) -> None:
        """Schedule every meter on the running loop; the first polls start at once."""
        if self._scheduler is not None:
            raise RuntimeError("poller already started")
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        for meter_id, polled in self._meters.items():
            scheduler.add_job(
                self._job, IntervalTrigger(seconds=polled.interval_s, timezone=UTC),
                args=[meter_id], id=meter_id, name=f"poll {meter_id}", next_run_time=now,
                max_instances=1, coalesce=True,
                misfire_grace_time=max(1, round(polled.interval_s)),
            )
        scheduler.start()
        self._scheduler = scheduler

    async def _job(self, meter_id: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await self.poll(meter_id)
        finally:
            self._running.discard(task)

    async def stop(self) -> None:
        """Stop scheduling and wait for polls in flight to be cancelled."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        # AsyncIOScheduler applies the shutdown on the loop's next turn: wait for its event.
        stopped = asyncio.Event()
        scheduler.add_listener(lambda _event: stopped.set(), EVENT_SCHEDULER_SHUTDOWN)
        scheduler.shutdown(wait=False)
        await cancel_and_wait(list(self._running))
        await stopped.wait()


def build_poller(
    config: AgentConfig,
    buses: Mapping[str, ModbusBus],
    on_readings: OnReadings,
    clock: Clock,
    *,
    s0_inputs: Mapping[str, SyncReadable] | None = None,
    backoff_max_s: float = 60.0,
    read_observer: ReadObserver | None = None,
) -> MeterPoller:
    """A poller for every meter of ``config``: a reader per Modbus meter, and the given S0
    inputs (by meter id; S0 meters without an input are left out, the caller logs why)."""
    intervals = {meter.id: meter.interval_s for meter in config.meters}
    sources: list[tuple[MeterSource, float]] = [
        (reader, intervals[reader.meter_id]) for reader in build_readers(config, buses, clock)
    ]
    for meter_id, pulse_input in (s0_inputs or {}).items():
        sources.append((SyncMeterSource(meter_id, pulse_input), intervals[meter_id]))
    return MeterPoller(sources, on_readings, clock, backoff_max_s=backoff_max_s,
                       read_observer=read_observer)


class FakePoller:
    """A :class:`~edge_agent.ports.Poller` with no meters, for tests that feed readings to the
    agent themselves; ``health`` is what it reports. Use ``functools.partial`` to set it."""

    def __init__(self, on_readings: OnReadings,
                 health: Mapping[str, MeterHealth] | None = None) -> None:
        self.on_readings = on_readings
        self._health = dict(health or {})

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def health(self) -> dict[str, MeterHealth]:
        return dict(self._health)
