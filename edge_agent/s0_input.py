"""S0 pulse meters on a GPIO pin: gpiozero adapter, persisted pulse counter, and a fake.

Wiring assumed by default: S0- to GND, S0+ to the GPIO (BCM numbering) with a pull-up, so the
open-collector output pulls the pin low for each pulse (``pull_up=True``: low is active). Pass
``pull_up=False`` for S0+ to 3.3 V and S0- to the pin with a pull-down.

Debounce is ours, not gpiozero's: every edge is timestamped with the injected
:class:`~edge_agent.ports.Clock` and judged by :class:`protocols.s0.S0Counter` (a pulse within
``debounce_ms`` of the last counted pulse or of the last release is a bounce). gpiozero's
``bounce_time`` is left off: its mock pins ignore it and it would hide bounces from the count.

Durability of the count (one SQLite file per meter, ``<state_dir>/s0-<meter_id>.sqlite``, WAL):
every counted pulse is committed at once with ``synchronous=NORMAL`` (~30 us; S0 rates are a
few pulses per second), so a crash, kill or restart of the agent loses nothing. The commits
reach the SD card at a checkpoint, which fsyncs; one runs at most every ``sync_interval_s``
(default 60 s) when there is something new, and on :meth:`GpiozeroPulseInput.close`. A power
cut can therefore cost the pulses counted since the last checkpoint: at most
``sync_interval_s`` worth of pulses (at 1000 imp/kWh and 3 kW, 50 pulses = 50 Wh).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from gpiozero import Device as GpioDevice
from gpiozero import DigitalInputDevice
from gpiozero.exc import GPIOZeroError, PinWarning
from gpiozero.pins import Factory

from edge_agent.config import MeterSettings
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.ports import Clock
from protocols.errors import InvalidMessage
from protocols.models import Reading, Unit
from protocols.s0 import S0Counter

log = logging.getLogger(__name__)

ENERGY_CHANNEL = "energy_import"
POWER_CHANNEL = "power"


class GpioUnavailableError(EdgeAgentError):
    """No GPIO pin factory could be loaded (not a Raspberry Pi, or no GPIO library)."""


def s0_readings(meter_id: str, counter: S0Counter, clock: Clock) -> list[Reading]:
    """Readings for one poll: energy always, power only once two pulses gave an interval."""
    ts = clock.now_ms()
    readings = [Reading(meter_id=meter_id, channel=ENERGY_CHANNEL, value=counter.energy_wh(),
                        unit=Unit.WATT_HOUR, ts=ts)]
    power = counter.power_w(clock.monotonic())
    if power is not None:
        readings.append(Reading(meter_id=meter_id, channel=POWER_CHANNEL, value=power,
                                unit=Unit.WATT, ts=ts))
    return readings


def default_pin_factory() -> Factory:
    """gpiozero's shared pin factory, loading it on first use.

    Raises :class:`GpioUnavailableError` listing why each GPIO library failed, instead of
    gpiozero's warnings and ``BadPinFactory``. Off a Pi, tests pass ``MockFactory()``
    explicitly; nothing here falls back to a mock by itself.
    """
    if GpioDevice.pin_factory is not None:
        return GpioDevice.pin_factory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PinWarning)
        try:
            factory = GpioDevice._default_pin_factory()
        except (GPIOZeroError, ImportError) as exc:
            reasons = "; ".join(str(w.message) for w in caught) or str(exc)
            raise GpioUnavailableError(
                f"GPIO is unavailable: no gpiozero pin factory could be loaded ({reasons}). "
                "S0 meters need a Raspberry Pi with lgpio or RPi.GPIO installed"
            ) from exc
    for warning in caught:
        log.warning("gpiozero: %s", warning.message)
    GpioDevice.pin_factory = factory
    return factory


class _SqliteCounterStore:
    """One meter's persisted pulse count; see the module docstring for durability."""

    def __init__(self, path: Path, meter_id: str) -> None:
        self.path = path
        self._meter_id = meter_id
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS s0_counter (meter_id TEXT PRIMARY KEY, "
                "pulses INTEGER NOT NULL, impulses_per_kwh REAL NOT NULL, base_wh REAL NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise EdgeAgentError(f"cannot open S0 state file {path}: {exc}") from exc

    def load(self) -> tuple[int, float, float] | None:
        """``(pulses, impulses_per_kwh, base_wh)`` saved last, or ``None`` for a new meter."""
        row = self._db.execute(
            "SELECT pulses, impulses_per_kwh, base_wh FROM s0_counter WHERE meter_id = ?",
            (self._meter_id,),
        ).fetchone()
        return None if row is None else (int(row[0]), float(row[1]), float(row[2]))

    def save(self, counter: S0Counter) -> None:
        """Commit the count (not fsynced: see :meth:`sync`). Raises ``sqlite3.Error``."""
        self._db.execute(
            "INSERT INTO s0_counter (meter_id, pulses, impulses_per_kwh, base_wh) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET pulses = excluded.pulses, "
            "impulses_per_kwh = excluded.impulses_per_kwh, base_wh = excluded.base_wh",
            (self._meter_id, counter.pulses, counter.impulses_per_kwh, counter.base_wh),
        )

    def sync(self, *, truncate: bool = False) -> None:
        """Checkpoint: fsyncs the WAL, copies it into the database and fsyncs that."""
        self._db.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if truncate else 'PASSIVE'})")

    def close(self) -> None:
        self._db.close()


def _restore(store: _SqliteCounterStore, meter_id: str, impulses_per_kwh: float,
             debounce_s: float) -> S0Counter:
    saved = store.load()
    if saved is None:
        log.info("S0 meter %s: no saved count in %s, starting at 0 Wh", meter_id, store.path)
        return S0Counter(impulses_per_kwh, debounce_s)
    pulses, saved_ipk, base_wh = saved
    if saved_ipk == impulses_per_kwh:
        return S0Counter(impulses_per_kwh, debounce_s, pulses=pulses, base_wh=base_wh)
    # The setting was corrected: keep the energy so far, count on at the new rate.
    old = S0Counter(saved_ipk, debounce_s, pulses=pulses, base_wh=base_wh)
    log.warning("S0 meter %s: impulses_per_kwh changed %s -> %s; energy continues from %.1f Wh",
                meter_id, saved_ipk, impulses_per_kwh, old.energy_wh())
    return S0Counter(impulses_per_kwh, debounce_s, base_wh=old.energy_wh())


class GpiozeroPulseInput:
    """An S0 meter on one GPIO pin (gpiozero 2), with a count that survives restarts.

    Raises :class:`ConfigError` if the meter has no ``s0`` table,
    :class:`GpioUnavailableError` if no pin factory loads (pass ``pin_factory`` to choose one,
    e.g. gpiozero's ``MockFactory`` in tests), and :class:`EdgeAgentError` if the pin cannot
    be claimed or the state file cannot be opened. Edge callbacks run on gpiozero's thread;
    :meth:`read` may run on any thread.
    """

    def __init__(self, meter: MeterSettings, *, clock: Clock, state_dir: Path,
                 pin_factory: Factory | None = None, pull_up: bool = True,
                 sync_interval_s: float = 60.0) -> None:
        if meter.s0 is None:
            raise ConfigError(f"meters.{meter.id}.s0", "an S0 meter needs an s0 table with its pin")
        self.meter_id = meter.id
        self.pin = meter.s0.pin
        self._clock = clock
        self._sync_interval_s = sync_interval_s
        self._lock = threading.Lock()
        self._store = _SqliteCounterStore(state_dir / f"s0-{meter.id}.sqlite", meter.id)
        try:
            self._counter = self._restore(meter.s0.impulses_per_kwh, meter.s0.debounce_ms / 1000)
            self._device = self._open_device(pin_factory, pull_up)
        except EdgeAgentError:
            self._store.close()
            raise
        self._dirty = False  # committed since the last checkpoint
        self._unsaved = False  # the last commit failed
        self._last_sync = clock.monotonic()
        self._closed = False
        self._device.when_activated = self._on_activated
        self._device.when_deactivated = self._on_deactivated

    def _restore(self, impulses_per_kwh: float, debounce_s: float) -> S0Counter:
        try:
            return _restore(self._store, self.meter_id, impulses_per_kwh, debounce_s)
        except (sqlite3.Error, InvalidMessage) as exc:
            raise EdgeAgentError(f"S0 meter {self.meter_id}: state file {self._store.path} "
                                 f"is unreadable ({exc}); move it away to start from 0 Wh"
                                 ) from exc

    def _open_device(self, pin_factory: Factory | None, pull_up: bool) -> DigitalInputDevice:
        factory = pin_factory if pin_factory is not None else default_pin_factory()
        try:
            return DigitalInputDevice(self.pin, pull_up=pull_up, bounce_time=None,
                                      pin_factory=factory)
        except GPIOZeroError as exc:
            raise EdgeAgentError(
                f"S0 meter {self.meter_id}: cannot use GPIO{self.pin}: {exc}") from exc

    @property
    def pulses(self) -> int:
        with self._lock:
            return self._counter.pulses

    @property
    def bounces(self) -> int:
        with self._lock:
            return self._counter.bounces

    def _on_activated(self) -> None:
        with self._lock:
            if self._closed or not self._counter.pulse(self._clock.monotonic()):
                return
            self._dirty = True
            self._persist(force_sync=False)

    def _on_deactivated(self) -> None:
        with self._lock:
            self._counter.release(self._clock.monotonic())

    def _persist(self, *, force_sync: bool) -> None:
        """Commit the count and checkpoint when due. Called with the lock held.

        A failing disk must not stop counting: the count stays in memory, the failure is
        logged once and the next pulse or poll tries again.
        """
        try:
            self._store.save(self._counter)
            now = self._clock.monotonic()
            if force_sync or (self._dirty and now - self._last_sync >= self._sync_interval_s):
                self._store.sync(truncate=force_sync)
                self._last_sync, self._dirty = now, False
        except sqlite3.Error as exc:
            if not self._unsaved:
                log.error("S0 meter %s: cannot save pulse count to %s: %s",
                          self.meter_id, self._store.path, exc)
            self._unsaved = True
            return
        if self._unsaved:
            log.info("S0 meter %s: saving the pulse count works again", self.meter_id)
        self._unsaved = False

    def read(self) -> list[Reading]:
        """Energy (Wh) and power (W) now; also runs a due checkpoint of the count."""
        with self._lock:
            if self._closed:
                raise EdgeAgentError(f"S0 meter {self.meter_id} is closed")
            due = self._clock.monotonic() - self._last_sync >= self._sync_interval_s
            if self._unsaved or (self._dirty and due):
                self._persist(force_sync=False)
            return s0_readings(self.meter_id, self._counter, self._clock)

    def close(self) -> None:
        """Stop counting, save and fsync the count, release the pin. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._persist(force_sync=True)
        self._device.close()
        self._store.close()


class FakePulseInput:
    """A :class:`~edge_agent.ports.PulseInput` for unit tests of the agent: pulses are scripted
    or injected.

    ``pulses`` are monotonic instants applied once the clock reaches them (at :meth:`read`);
    :meth:`pulse` adds one now. ``handler``, if given, replaces :meth:`read`'s result (and may
    raise) the way httpx's ``MockTransport`` takes a handler.
    """

    def __init__(self, meter_id: str, clock: Clock, *, impulses_per_kwh: float = 1000.0,
                 debounce_ms: float = 30.0, pulses: Iterable[float] = (),
                 handler: Callable[[], list[Reading]] | None = None) -> None:
        self.meter_id = meter_id
        self.closed = False
        self.counter = S0Counter(impulses_per_kwh, debounce_ms / 1000)
        self._clock = clock
        self._scripted = sorted(pulses)
        self._handler = handler

    def pulse(self, at: float | None = None) -> bool:
        """Feed one activation (now by default); True if it counted."""
        return self.counter.pulse(self._clock.monotonic() if at is None else at)

    def read(self) -> list[Reading]:
        if self.closed:
            raise EdgeAgentError(f"S0 meter {self.meter_id} is closed")
        now = self._clock.monotonic()
        while self._scripted and self._scripted[0] <= now:
            self.counter.pulse(self._scripted.pop(0))
        if self._handler is not None:
            return self._handler()
        return s0_readings(self.meter_id, self.counter, self._clock)

    def close(self) -> None:
        self.closed = True
