"""The schedule worker: accepted recommendations become commands at their switch times.

Each replica runs one. Due schedules are claimed with ``FOR UPDATE SKIP LOCKED`` (one replica
fires each); the command goes through the same idempotent path as ``POST .../commands``, with
the key ``schedule-{id}-{switch time}``, so a retry, a crash before the next run was stored or
a second replica all end in one command. The state sent is the one the window wants *now*
(``wants_on``): a switch missed while every replica was down is made up once, not replayed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from cloud_sync.analytics.schedule import next_switch, wants_on
from cloud_sync.command_rules import CommandRequest
from cloud_sync.db.analytics_queries import Schedule
from cloud_sync.db.commands_store import CommandLimits, CommandRefused
from cloud_sync.errors import StorageUnavailable
from cloud_sync.ports import Device, StoredCommand
from cloud_sync.worker_thread import WorkerThread
from protocols.commands import Action, Priority

log = logging.getLogger(__name__)


class ScheduleStore(Protocol):
    def run_due_schedules(self, now_ms: int, limit: int,
                          fire: Callable[[Schedule], int | None]) -> int: ...


class CommandMaker(Protocol):
    def create_command(self, device: Device, idempotency_key: str, request: CommandRequest,
                       now_ms: int, limits: CommandLimits, *, traceparent: str | None = None,
                       ) -> tuple[StoredCommand, bool]: ...


@dataclass
class ScheduleStats:
    fired: int = 0
    refused: int = 0  # rate limit or full queue: retried next round
    missing_device: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def schedule_key(schedule: Schedule) -> str:
    return f"schedule-{schedule.id}-{schedule.next_run_ms}"


class ScheduleRunner:
    """``run_once`` fires every due schedule; synchronous, for tests and the worker."""

    def __init__(self, store: ScheduleStore, commands: CommandMaker,
                 device_of: Callable[[str], Device | None],
                 zone_of_home: Callable[[str], ZoneInfo], limits: CommandLimits, *,
                 now_ms: Callable[[], int], ttl_s: int = 300,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.commands = commands
        self.device_of = device_of
        self.zone_of_home = zone_of_home
        self.limits = limits
        self.now_ms = now_ms
        self.ttl_s = ttl_s
        self.wake_dispatcher = wake
        self.stats = ScheduleStats()

    def fire(self, schedule: Schedule) -> int | None:
        now = self.now_ms()
        tz = self.zone_of_home(schedule.home_id)
        device = self.device_of(schedule.device_id)
        following = next_switch(schedule.on_at, schedule.off_at, now, tz)
        if device is None:
            self.stats.missing_device += 1
            log.warning("schedule %s: device %s is gone; skipping", schedule.id,
                        schedule.device_id)
            return following
        on = wants_on(schedule.on_at, schedule.off_at, now, tz)
        request = CommandRequest(Action.SWITCH_ON if on else Action.SWITCH_OFF, {}, self.ttl_s,
                                 Priority.NORMAL)
        try:
            _command, created = self.commands.create_command(device, schedule_key(schedule),
                                                             request, now, self.limits)
        except CommandRefused as exc:
            self.stats.refused += 1
            log.info("schedule %s: %s; retrying next round", schedule.id, exc)
            return None
        if created:
            self.wake_dispatcher()
        self.stats.fired += 1
        return following

    def run_once(self, limit: int = 100) -> int:
        return self.store.run_due_schedules(self.now_ms(), limit, self.fire)


class ScheduleWorker(WorkerThread):
    thread_name = "analytics-schedules"

    def __init__(self, runner: ScheduleRunner, interval_s: float = 20.0) -> None:
        super().__init__()
        self.runner = runner
        self.interval_s = interval_s
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def _wake_for_stop(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.runner.run_once()
            except StorageUnavailable as exc:
                log.warning("schedule worker: %s", exc)
            self._wake.wait(self.interval_s)
            self._wake.clear()


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
