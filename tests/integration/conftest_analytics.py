"""A simulated home's readings with exact ground truth, for the analytics tests.

:class:`RecordedHome` drives the simulator's :class:`~simulator.meters.MeterBank` (the same
pure meters ``homewatt-sim`` serves over Modbus) in fixed steps and records, at every step, the
readings a gateway would take (the decoded register image, judged by the edge's own
:class:`~edge_agent.counter_guard.CounterGuard`) and the true energy of the step (the float64
counters' increase, which a counter reset or a meter swap does not disturb).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from cloud_sync.analytics import calendar
from edge_agent.counter_guard import CounterGuard
from protocols import Reading, TelemetryBatch, Unit
from protocols.models import Quality
from simulator.meters import GRID_UNIT, HEAT_PUMP_UNIT, INVERTER_UNIT, WATER_HEATER_UNIT, MeterBank

GW = "gw-analytics"
# meter id -> (simulator unit, counter channels)
METERS: dict[str, tuple[int, tuple[str, ...]]] = {
    "grid": (GRID_UNIT, ("energy_import", "energy_export")),
    "heatpump": (HEAT_PUMP_UNIT, ("energy_import",)),
    "waterheater": (WATER_HEATER_UNIT, ("energy_import",)),
    "pv": (INVERTER_UNIT, ("energy_production",)),
}
PLUG = "plug"  # a power-only meter (no counter): it shows the heat pump's power


@dataclass
class RecordedHome:
    seed: int
    start_ms: int
    step_s: int = 60
    bank: MeterBank = field(init=False)
    readings: list[Reading] = field(default_factory=list)
    # (meter, channel) -> step start ms -> true Wh in that step
    truth: dict[tuple[str, str], dict[int, float]] = field(
        default_factory=lambda: defaultdict(dict))
    _seq: int = 0

    def __post_init__(self) -> None:
        self.bank = MeterBank(self.seed, self.start_ms)
        self.guard = CounterGuard(50_000.0)

    def _add(self, meter: str, channel: str, value: float, unit: Unit, ts: int,
             quality: Quality = Quality.GOOD) -> None:
        self._seq += 1
        self.readings.append(Reading(meter_id=meter, channel=channel, value=value, unit=unit,
                                     ts=ts, quality=quality, seq=self._seq))

    def read(self) -> None:
        """What the gateway reads now (counters judged by the edge's counter guard)."""
        ts, truth = self.bank.ts_ms, self.bank.truth()
        for meter, (unit, channels) in METERS.items():
            shown = truth[unit]
            self._add(meter, "power", float(shown["power"] or 0.0), Unit.WATT, ts)
            for channel in channels:
                value = float(shown[channel] or 0.0)
                quality = self.guard.check((meter, channel), value, ts / 1000)
                self._add(meter, channel, value, Unit.WATT_HOUR, ts, quality)
        self._add(PLUG, "power", float(truth[HEAT_PUMP_UNIT]["power"] or 0.0), Unit.WATT, ts)

    def step(self) -> None:
        """Read, then move one step on."""
        self.read()
        self.advance()

    def advance(self) -> None:
        """Move one step on, booking the true energy of the step."""
        ts = self.bank.ts_ms
        before = {m: dict(self.bank.meters[u].counters.wh) for m, (u, _c) in METERS.items()}
        self.bank.advance(self.step_s)
        for meter, (unit, channels) in METERS.items():
            after = self.bank.meters[unit].counters.wh
            for channel in channels:
                self.truth[(meter, channel)][ts] = after[channel] - before[meter][channel]
        self.truth[(PLUG, "energy_import")][ts] = self.truth[("heatpump", "energy_import")][ts]

    def run_until(self, ts_ms: int) -> None:
        while self.bank.ts_ms < ts_ms:
            self.step()

    def true_hours(self, meter: str, channel: str, tz: ZoneInfo) -> dict[int, float]:
        hours: dict[int, float] = defaultdict(float)
        for ts, wh in self.truth[(meter, channel)].items():
            hours[calendar.hour_start(ts, tz)] += wh
        return dict(hours)


def batches(readings: list[Reading], size: int = 500, gw: str = GW) -> list[TelemetryBatch]:
    return [TelemetryBatch(gateway_id=gw, readings=readings[i:i + size])
            for i in range(0, len(readings), size)]
