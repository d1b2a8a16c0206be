"""Reading one Modbus meter: few block requests, decode, canonical ``Reading`` s with quality.

Guarantees a caller can rely on:

- A failed read never yields a number: every channel the meter is known to have gets one
  ``Quality.ERROR`` reading with ``value=None`` (one per channel, so each channel's time series
  shows the gap itself). A SunSpec device that was never discovered has no known channels: it
  gets a single ERROR reading on channel ``device``. ``last_error`` says why; it is ``None``
  after a successful read.
- A channel the device reports as "not implemented" (a SunSpec/NaN marker) is left out: it is
  not a measurement, and not a failure either.
- Energy counters go through :class:`~edge_agent.counter_guard.CounterGuard`; implausible
  values keep their number and get ``Quality.SUSPECT``.
- A read is all or nothing: if any block request fails, the whole meter read is an error
  (half a meter is more confusing than a gap).

SunSpec devices are discovered once (scan the base addresses, walk the model chain, keep the
supported models) and the result is cached. The cache is dropped when the device answers
"illegal address" (its layout changed) or after it went offline, so a replaced or
re-configured device is rediscovered when it answers again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from edge_agent.backoff import OFFLINE_AFTER_FAILURES
from edge_agent.config import AgentConfig, MeterSettings
from edge_agent.counter_guard import CounterGuard
from edge_agent.errors import BusError, EdgeAgentError
from edge_agent.logs import LogSampler
from edge_agent.modbus_bus import ILLEGAL_DATA_ADDRESS
from edge_agent.ports import Clock, ModbusBus
from protocols.errors import InvalidMessage
from protocols.modbus import METER_MAPS, sunspec
from protocols.modbus.decode import decode_map
from protocols.modbus.registers import ChannelKind, RegisterKind, RegisterMap
from protocols.models import Quality, Reading, Unit

log = logging.getLogger(__name__)
# A counter stuck implausible is flagged on every poll: log it once, then 1 in 100 per channel.
_SUSPECT_LOG = LogSampler(one_in=100)

DEVICE_CHANNEL = "device"  # error channel of a device whose channels are not known yet
_MAX_SUNSPEC_MODELS = 64  # a chain longer than this is a broken device, not a real one


class SunSpecNotFound(EdgeAgentError):
    """The device answers but has no SunSpec marker at any scan base."""


class MapSource(Protocol):
    """Where a reader's register maps come from: fixed (Eastron) or discovered (SunSpec)."""

    async def maps(self, bus: ModbusBus, unit: int) -> tuple[RegisterMap, ...]: ...

    def invalidate(self) -> None: ...

    def known(self) -> tuple[RegisterMap, ...]:
        """The maps last used (empty when never discovered): the channels of error readings."""
        ...


class FixedMaps:
    """A meter model with a known, fixed register map."""

    def __init__(self, *maps: RegisterMap) -> None:
        self._maps = maps

    async def maps(self, bus: ModbusBus, unit: int) -> tuple[RegisterMap, ...]:
        return self._maps

    def invalidate(self) -> None:
        """Nothing to forget: the map is fixed."""

    def known(self) -> tuple[RegisterMap, ...]:
        return self._maps


class SunSpecMaps:
    """Discovers a SunSpec device's supported models once and caches their register maps."""

    def __init__(self) -> None:
        self._cached: tuple[RegisterMap, ...] | None = None
        self._last: tuple[RegisterMap, ...] = ()

    async def maps(self, bus: ModbusBus, unit: int) -> tuple[RegisterMap, ...]:
        if self._cached is None:
            self._cached = self._last = await discover_sunspec(bus, unit)
        return self._cached

    def invalidate(self) -> None:
        self._cached = None

    def known(self) -> tuple[RegisterMap, ...]:
        return self._last


async def _find_base(bus: ModbusBus, unit: int) -> int:
    for base in sunspec.SCAN_BASES:
        try:
            words = await bus.read_registers(unit, RegisterKind.HOLDING, base, 2)
        except BusError as exc:
            if exc.exception_code is None:
                raise  # no answer at all: the device is offline, scanning on is pointless
            continue
        if sunspec.is_sunspec_marker(words):
            return base
    raise SunSpecNotFound(f"unit {unit}: no SunSpec marker at {sunspec.SCAN_BASES}")


async def discover_sunspec(bus: ModbusBus, unit: int) -> tuple[RegisterMap, ...]:
    """Scan for the SunSpec marker, walk the model chain, map every supported model.

    Raises :class:`BusError` when the device does not answer and :class:`SunSpecNotFound`
    when it answers but is not SunSpec or carries no supported model with measurements.
    """
    address = await _find_base(bus, unit) + 2
    maps: list[RegisterMap] = []
    found: list[int] = []
    for _ in range(_MAX_SUNSPEC_MODELS):
        words = await bus.read_registers(unit, RegisterKind.HOLDING, address, 2)
        header = sunspec.parse_model_header(address, words)
        if header is None:
            break
        found.append(header.model_id)
        if header.model_id == sunspec.COMMON_MODEL_ID:
            await _log_device_info(bus, unit, header)
        elif header.model_id in sunspec.SUPPORTED_MODELS:
            maps.append(sunspec.model_register_map(header.model_id, header.body_address))
        address = sunspec.next_model_address(header)
    if not maps:
        raise SunSpecNotFound(f"unit {unit}: SunSpec models {found}, none with supported "
                              f"measurements (supported: {sorted(sunspec.SUPPORTED_MODELS)})")
    log.info("unit %d: SunSpec models %s, reading %s", unit, found, [m.model for m in maps])
    return tuple(maps)


async def _log_device_info(bus: ModbusBus, unit: int, header: sunspec.ModelHeader) -> None:
    """Log who made the device: installers compare it with the nameplate."""
    count = min(header.length, 66)
    words = await bus.read_registers(unit, RegisterKind.HOLDING, header.body_address, count)
    try:
        info = sunspec.decode_common(words)
    except InvalidMessage as exc:
        log.info("unit %d: unreadable SunSpec common model (%s)", unit, exc)
        return
    log.info("unit %d: %s %s, serial %s, version %s", unit, info.manufacturer, info.model,
             info.serial, info.version)


def map_source(meter: MeterSettings) -> MapSource:
    if meter.model == "sunspec":
        return SunSpecMaps()
    return FixedMaps(METER_MAPS[meter.model])


class MeterReader:
    """Reads one Modbus meter on demand; see the module docstring for the guarantees."""

    def __init__(
        self,
        meter: MeterSettings,
        bus: ModbusBus,
        clock: Clock,
        *,
        maps: MapSource | None = None,
        guard: CounterGuard | None = None,
    ) -> None:
        self.meter_id = meter.id
        self.unit = meter.unit
        self.bus = bus
        self.clock = clock
        self.last_error: str | None = None
        self._maps = maps or map_source(meter)
        self._guard = guard or CounterGuard(meter.max_power_w)
        self._failures = 0

    async def read(self) -> list[Reading]:
        """One reading per channel: measured values, or ERROR readings when the read failed."""
        try:
            values = await self._read_values()
        except (BusError, SunSpecNotFound, InvalidMessage) as exc:
            return self._failed(exc)
        self._failures = 0
        self.last_error = None
        return self._readings(values)

    async def _read_values(self) -> list[tuple[str, Unit, ChannelKind, float | None]]:
        maps = await self._maps.maps(self.bus, self.unit)
        values: list[tuple[str, Unit, ChannelKind, float | None]] = []
        for rmap in maps:
            image = await self._read_image(rmap)
            decoded = decode_map(rmap, image)
            values.extend((f.channel, f.unit, f.kind, decoded[f.channel]) for f in rmap.fields)
        return values

    async def _read_image(self, rmap: RegisterMap) -> dict[int, int]:
        image: dict[int, int] = {}
        for block in rmap.blocks():
            words = await self.bus.read_registers(self.unit, rmap.register_kind, block.address,
                                                  block.count)
            image.update(zip(range(block.address, block.address + block.count), words,
                             strict=True))
        return image

    def _readings(self, values: Iterable[tuple[str, Unit, ChannelKind, float | None]]
                  ) -> list[Reading]:
        ts = self.clock.now_ms()
        now = self.clock.monotonic()
        readings = []
        for channel, unit, kind, value in values:
            if value is None:
                continue
            quality = Quality.GOOD
            if kind is ChannelKind.COUNTER:
                quality = self._guard.check((self.meter_id, channel), value, now)
                if quality is Quality.SUSPECT:
                    self._log_suspect(channel, value)
            readings.append(Reading(meter_id=self.meter_id, channel=channel, value=value,
                                    unit=unit, ts=ts, quality=quality))
        return readings

    def _log_suspect(self, channel: str, value: float) -> None:
        log_it, skipped = _SUSPECT_LOG.should_log(f"{self.meter_id}/{channel}")
        if log_it:
            log.warning("meter %s: counter %s=%s is implausible, flagged suspect "
                        "(%d similar not logged)", self.meter_id, channel, value, skipped)

    def _failed(self, exc: Exception) -> list[Reading]:
        self._failures += 1
        self.last_error = str(exc)
        changed_layout = isinstance(exc, BusError) and exc.exception_code == ILLEGAL_DATA_ADDRESS
        if changed_layout or self._failures == OFFLINE_AFTER_FAILURES:
            self._maps.invalidate()
        ts = self.clock.now_ms()
        channels = {f.channel: f.unit for rmap in self._maps.known() for f in rmap.fields}
        channels = channels or {DEVICE_CHANNEL: Unit.NONE}
        return [Reading(meter_id=self.meter_id, channel=channel, value=None, unit=unit, ts=ts,
                        quality=Quality.ERROR) for channel, unit in channels.items()]


def build_readers(config: AgentConfig, buses: Mapping[str, ModbusBus], clock: Clock
                  ) -> list[MeterReader]:
    """A reader per Modbus meter of ``config`` (S0 meters are not Modbus and are skipped)."""
    readers = []
    for meter in config.meters:
        if meter.model == "s0" or meter.bus is None:
            continue
        readers.append(MeterReader(meter, buses[meter.bus], clock))
    return readers
