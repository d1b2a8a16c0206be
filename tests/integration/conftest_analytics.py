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

import sqlalchemy as sa

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


ANALYTICS_TABLES = {"energy_15m", "energy_hourly", "energy_daily", "analytics_dirty",
                    "analytics_claims", "analytics_zones", "analytics_tariffs",
                    "analytics_prices", "analytics_flexible_loads", "analytics_schedules"}


def fill_analytics(conn: sa.Connection) -> None:
    """Fixed rows in every analytics table (revision 0008), for the migration and backup
    tests: unicode, NULLs, floats, booleans."""
    from cloud_sync.db import schema_analytics as t

    series = {"gateway_id": "gw-1", "meter_id": "grid", "channel": "energy_import"}
    for table in (t.energy_15m, t.energy_hourly):
        conn.execute(table.insert(), [{**series, "bucket_ms": 1_700_000_100_000 + k * 900_000,
                                       "wh": 12.5 + k, "flags": k % 3} for k in range(4)])
    conn.execute(t.energy_daily.insert(), [{**series, "day": "2023-11-14",
                                            "start_ms": 1_699_916_400_000,
                                            "end_ms": 1_700_002_800_000, "wh": 321.25,
                                            "flags": 1}])
    conn.execute(t.analytics_dirty.insert(), [{**series, "from_ms": 1_700_002_800_000,
                                               "to_ms": 1_700_006_400_000, "gen": 3}])
    conn.execute(t.analytics_claims.insert(), [{**series, "owner": "ab12", "expires_at": 1}])
    conn.execute(t.analytics_zones.insert(), [{"gateway_id": "gw-1",
                                               "timezone": "Europe/Berlin"}])
    conn.execute(t.tariffs.insert(), [{"home_id": "home-1", "valid_from_ms": 0,
                                       "body": '{"currency": "EUR", "note": "Grundpreis ü"}'}])
    conn.execute(t.prices.insert(), [{"home_id": "home-1", "start_ms": 1_700_000_100_000,
                                      "end_ms": 1_700_003_700_000, "import_price": 0.1234,
                                      "export_price": None}])
    conn.execute(t.flexible_loads.insert(), [{"home_id": "home-1",
                                              "meter_device_id": "gw-1.grid",
                                              "actuator_device_id": "dev-1",
                                              "label": "Boiler ☀"}])
    conn.execute(t.schedules.insert(), [{"id": "s1", "home_id": "home-1", "device_id": "dev-1",
                                         "on_at": "00:00", "off_at": "01:00",
                                         "recommendation": '{"id": "r1"}',
                                         "created_at": 1_700_000_000_000,
                                         "next_run_ms": 1_700_000_900_000, "active": True}])
