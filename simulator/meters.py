"""The simulated home's meters: what each one measures, its energy counters, its register image.

Pure code (no sockets, no clock): :class:`MeterBank` owns a :class:`~simulator.profiles.HomeProfile`
and the five devices, moves them on with :meth:`MeterBank.advance` and renders each device's
register image with the *same* encoders the agent decodes with (``protocols.modbus``), so the
simulator and the decoder agree by construction.

Ground truth (:meth:`MeterBank.truth`) is the register image decoded again: exactly what a
client reading the registers right now gets, in canonical units (W, V, A, Hz, Wh), ``None``
where the device shows "not implemented". Energy counters are integrated in float64 from the
power the registers show during each step (``E += P * dt``), so they are the exact integral of
the readable power; the registers carry them at the device's resolution (float32 kWh on
Eastron, acc32 Wh with a scale factor on SunSpec).
"""

from __future__ import annotations

import cmath
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocols.modbus import (
    METER_MAPS,
    DataType,
    DeviceInfo,
    RegisterKind,
    RegisterMap,
    build_image,
    choose_scale_factors,
    decode_map,
    encode_common,
    encode_map,
    encode_model_body,
    model_length,
    model_register_map,
)
from protocols.modbus.eastron_id import eastron_holding_image
from protocols.models import Unit
from simulator.controllers import ControllerBank
from simulator.profiles import HomeConfig, HomeProfile, PowerSample

Values = dict[str, float | None]
SUNSPEC_BASE = 40000
GRID_UNIT, HEAT_PUMP_UNIT, WATER_HEATER_UNIT, INVERTER_UNIT, SUNSPEC_METER_UNIT = 1, 2, 3, 126, 240

_TAN_PF95 = math.tan(math.acos(0.95))  # reactive share of the small loads
_TAN_PF97 = math.tan(math.acos(0.97))  # heat-pump compressor
_PHASE_ANGLE = (0.0, -2 * math.pi / 3, 2 * math.pi / 3)


@dataclass(frozen=True)
class PhaseFlow:
    """One phase as a meter sees it: + import (consumption), - export."""

    volts: float
    watts: float
    vars: float = 0.0

    @property
    def volt_amps(self) -> float:
        return math.hypot(self.watts, self.vars)

    @property
    def amps(self) -> float:
        return self.volt_amps / self.volts

    @property
    def power_factor(self) -> float:
        """Signed P/S: negative while exporting; 1.0 with no load."""
        return self.watts / self.volt_amps if self.volt_amps else 1.0


def electrical_values(flows: Sequence[PhaseFlow], frequency: float) -> Values:
    """Instantaneous channels of a 1- or 3-phase meter (names of ``protocols.modbus`` maps)."""
    watts = sum(f.watts for f in flows)
    var = sum(f.vars for f in flows)
    volt_amps = math.hypot(watts, var)
    values: Values = {
        "voltage": sum(f.volts for f in flows) / len(flows),
        "current": sum(f.amps for f in flows),
        "power": watts,
        "apparent_power": volt_amps,
        "reactive_power": var,
        "power_factor": watts / volt_amps if volt_amps else 1.0,
        "frequency": frequency,
    }
    if len(flows) == 3:
        neutral = sum(cmath.rect(f.amps, angle - math.atan2(f.vars, f.watts))
                      for f, angle in zip(flows, _PHASE_ANGLE, strict=True))
        values["current_n"] = abs(neutral)
        for n, flow in enumerate(flows, start=1):
            values.update({
                f"voltage_l{n}": flow.volts, f"current_l{n}": flow.amps,
                f"power_l{n}": flow.watts, f"apparent_power_l{n}": flow.volt_amps,
                f"reactive_power_l{n}": flow.vars, f"power_factor_l{n}": flow.power_factor,
            })
    return values


class EnergyCounters:
    """Float64 energy registers in Wh (varh), integrated from the power the meter shows.

    ``production`` meters (inverters) count ``energy_production``; the others count import and
    export, total and per phase, and reactive energy both ways.
    """

    def __init__(self, start: Mapping[str, float], production: bool = False) -> None:
        self.wh: dict[str, float] = dict(start)
        self.production = production

    def integrate(self, shown: Mapping[str, float | None], dt_s: float) -> None:
        """Add ``P * dt`` for every counter, P being the value ``shown`` during the step."""
        hours = dt_s / 3600.0
        if self.production:
            self._add("energy_production", max(shown.get("power") or 0.0, 0.0) * hours)
            return
        for suffix in ("", "_l1", "_l2", "_l3"):
            watts = shown.get(f"power{suffix}")
            if watts is not None and f"energy_import{suffix}" in self.wh:
                self._add(f"energy_import{suffix}", max(watts, 0.0) * hours)
                self._add(f"energy_export{suffix}", max(-watts, 0.0) * hours)
        var = shown.get("reactive_power") or 0.0
        self._add("reactive_energy_import", max(var, 0.0) * hours)
        self._add("reactive_energy_export", max(-var, 0.0) * hours)

    def _add(self, name: str, amount: float) -> None:
        if name in self.wh:
            self.wh[name] += amount

    def step_back(self, wh: float | None = None) -> None:
        """A meter fault: counters jump back by ``wh`` (clamped at 0), or to 0 when ``None``."""
        for name, value in self.wh.items():
            self.wh[name] = 0.0 if wh is None else max(0.0, value - wh)

    def values(self) -> Values:
        values: Values = dict(self.wh)
        if "energy_import" in self.wh:
            values["energy_total"] = self.wh["energy_import"] + self.wh["energy_export"]
        return values


class RegisterLayout(Protocol):
    """How a device lays its channels out in registers (Eastron map, SunSpec chain)."""

    register_kind: RegisterKind
    model: str

    def encode(self, values: Mapping[str, float | None]) -> dict[int, int]: ...

    def decode(self, image: Mapping[int, int]) -> Values: ...


class EastronLayout:
    """Eastron SDM input registers (FC4) at address 0: float32, energies in kWh."""

    register_kind = RegisterKind.INPUT

    def __init__(self, rmap: RegisterMap) -> None:
        self.rmap = rmap
        self.model = rmap.model

    def encode(self, values: Mapping[str, float | None]) -> dict[int, int]:
        return encode_map(self.rmap, values)

    def decode(self, image: Mapping[int, int]) -> Values:
        return decode_map(self.rmap, image)


# Worst-case magnitudes per unit: scale factors are fixed once from these, as a device does.
_HEADROOM: dict[Unit, float] = {
    Unit.WATT: 20_000.0, Unit.VOLT_AMPERE: 20_000.0, Unit.VAR: 20_000.0, Unit.VOLT: 300.0,
    Unit.AMPERE: 100.0, Unit.HERTZ: 65.0, Unit.WATT_HOUR: 1e8, Unit.CELSIUS: 100.0,
    Unit.NONE: 1.0,
}


class SunSpecLayout:
    """SunSpec holding registers (FC3): 'SunS' at ``base``, model 1, one numeric model, end."""

    register_kind = RegisterKind.HOLDING

    def __init__(self, model_id: int, info: DeviceInfo, base: int = SUNSPEC_BASE) -> None:
        self.model_id = model_id
        self.model = f"sunspec_{model_id}"
        self.base = base
        self._common = encode_common(info)
        body_address = base + 2 + 2 + model_length(1) + 2
        self.rmap = model_register_map(model_id, body_address)
        self._offsets = model_register_map(model_id, 0)
        worst = {f.channel: _HEADROOM.get(f.unit, 1.0) for f in self._offsets.fields}
        self.sf = choose_scale_factors(self._offsets, worst)

    def encode(self, values: Mapping[str, float | None]) -> dict[int, int]:
        carried = dict(values)
        for field in self._offsets.fields:
            value = carried.get(field.channel)
            # acc32 0 is SunSpec's "not implemented": a counter reset to ~0 shows as a marker.
            if (field.dtype is DataType.ACC32 and value is not None
                    and field.sf_address is not None
                    and round(value / field.scale / 10 ** self.sf[field.sf_address]) == 0):
                carried[field.channel] = None
        body = encode_model_body(self.model_id, carried, self.sf)
        return build_image(self.base, [(1, self._common), (self.model_id, body)])

    def decode(self, image: Mapping[int, int]) -> Values:
        return decode_map(self.rmap, image)


class SimulatedMeter:
    """One Modbus unit: what it measures (``measure``), its counters and its register layout."""

    def __init__(self, unit: int, name: str, layout: RegisterLayout, counters: EnergyCounters,
                 measure: Callable[[PowerSample], Values]) -> None:
        self.unit = unit
        self.name = name
        self.layout = layout
        self.counters = counters
        self._measure = measure
        self.image: dict[int, int] = {}
        self.shown: Values = {}
        # Fixed configuration registers served beside an input-register layout (Eastron's
        # node address, baud rate, system type): what `homewatt-agent scan` identifies by.
        self.holding: dict[int, int] = (
            eastron_holding_image(layout.model, unit)
            if layout.register_kind is RegisterKind.INPUT else {})

    def refresh(self, sample: PowerSample) -> None:
        """Re-render the register image from ``sample`` and the counters."""
        self.image = self.layout.encode(self._measure(sample) | self.counters.values())
        self.shown = self.layout.decode(self.image)


@dataclass(frozen=True)
class Wiring:
    """Which circuit sits on which phase of the grid connection (PV is spread evenly)."""

    config: HomeConfig

    def grid(self, s: PowerSample) -> list[PhaseFlow]:
        third = s.pv_w / 3.0
        v1, v2, v3 = s.voltages
        return [
            PhaseFlow(v1, s.base_w - third, s.base_w * _TAN_PF95),
            PhaseFlow(v2, s.heat_pump_w - third, s.heat_pump_w * _TAN_PF97),
            PhaseFlow(v3, s.water_heater_w - third, 0.0),
        ]

    def grid_values(self, s: PowerSample) -> Values:
        return electrical_values(self.grid(s), s.frequency)

    def heat_pump(self, s: PowerSample) -> Values:
        flow = PhaseFlow(s.voltages[1], s.heat_pump_w, s.heat_pump_w * _TAN_PF97)
        return electrical_values([flow], s.frequency)

    def water_heater(self, s: PowerSample) -> Values:
        return electrical_values([PhaseFlow(s.voltages[2], s.water_heater_w)], s.frequency)

    def inverter(self, s: PowerSample) -> Values:
        """AC side as a generator (+ production), DC side and cabinet temperature."""
        flows = [PhaseFlow(v, s.pv_w / 3.0) for v in s.voltages]
        values = electrical_values(flows, s.frequency)
        producing = s.pv_w > 0.0
        dc_power = s.pv_w / 0.965 if producing else 0.0
        dc_voltage = 360.0 + 60.0 * s.pv_w / self.config.pv_peak_w if producing else 0.0
        values.update(
            dc_power=dc_power,
            dc_voltage=dc_voltage,
            dc_current=dc_power / dc_voltage if producing else 0.0,
            temperature=22.0 + 30.0 * s.pv_w / self.config.pv_peak_w,
        )
        return values


def _grid_counters(rng: random.Random) -> dict[str, float]:
    start = {"energy_import": rng.uniform(1e6, 5e6), "energy_export": rng.uniform(3e5, 2e6),
             "reactive_energy_import": rng.uniform(1e5, 5e5), "reactive_energy_export": 0.0}
    for n in (1, 2, 3):
        start[f"energy_import_l{n}"] = start["energy_import"] / 3.0
        start[f"energy_export_l{n}"] = start["energy_export"] / 3.0
    return start


def _load_counters(rng: random.Random) -> dict[str, float]:
    return {"energy_import": rng.uniform(5e5, 3e6), "energy_export": 0.0,
            "reactive_energy_import": rng.uniform(1e4, 1e5), "reactive_energy_export": 0.0}


class MeterBank:
    """The home and its five Modbus units; pure, driven by :meth:`advance`.

    Units: 1 SDM630 at the grid connection, 2 SDM120 heat pump, 3 SDM120 water heater,
    126 SunSpec inverter (models 1 + 103 at 40000), 240 SunSpec meter (1 + 203) at the grid.
    """

    def __init__(self, seed: int, start_ts_ms: int, config: HomeConfig | None = None) -> None:
        self.profile = HomeProfile(seed, start_ts_ms, config)
        rng = random.Random(seed ^ 0x5EED)
        wire = Wiring(self.profile.config)

        def info(model: str, serial: int) -> DeviceInfo:
            return DeviceInfo("homewatt-sim", model, "1.0", f"SIM{seed:04d}{serial:03d}")

        self.meters: dict[int, SimulatedMeter] = {m.unit: m for m in (
            SimulatedMeter(GRID_UNIT, "grid", EastronLayout(METER_MAPS["sdm630"]),
                           EnergyCounters(_grid_counters(rng)), wire.grid_values),
            SimulatedMeter(HEAT_PUMP_UNIT, "heat_pump", EastronLayout(METER_MAPS["sdm120"]),
                           EnergyCounters(_load_counters(rng)), wire.heat_pump),
            SimulatedMeter(WATER_HEATER_UNIT, "water_heater", EastronLayout(METER_MAPS["sdm120"]),
                           EnergyCounters(_load_counters(rng)), wire.water_heater),
            SimulatedMeter(INVERTER_UNIT, "pv_inverter",
                           SunSpecLayout(103, info("SIM-INV-103", INVERTER_UNIT)),
                           EnergyCounters({"energy_production": rng.uniform(2e6, 8e6)},
                                          production=True), wire.inverter),
            SimulatedMeter(SUNSPEC_METER_UNIT, "grid_sunspec",
                           SunSpecLayout(203, info("SIM-MTR-203", SUNSPEC_METER_UNIT)),
                           EnergyCounters(_grid_counters(rng)), wire.grid_values),
        )}
        self.controllers = ControllerBank()
        self._refresh()

    @property
    def ts_ms(self) -> int:
        return self.profile.ts_ms

    @property
    def sample(self) -> PowerSample:
        return self.profile.sample

    def advance(self, dt_s: float) -> None:
        """Move ``dt_s`` on: counters add the power shown during the step, then re-render."""
        for meter in self.meters.values():
            meter.counters.integrate(meter.shown, dt_s)
        self.profile.advance(dt_s)
        self._refresh()

    def step_back_counters(self, unit: int, wh: float | None = None) -> None:
        """Fault: ``unit``'s energy counters drop by ``wh`` (to 0 when ``None``), now."""
        meter = self.meters[unit]
        meter.counters.step_back(wh)
        meter.refresh(self.profile.sample)

    def write(self, unit: int, address: int, values: list[int]) -> None:
        """A controller write: applied to the loads and re-rendered at once.

        Raises ``IllegalAddress``/``IllegalValue`` (``simulator.controllers``), changing nothing.
        The step a write lands in is integrated at the power shown after the write (a tick is
        short), so the counters stay the integral of what the registers showed.
        """
        self.controllers.write(unit, address, values, self.ts_ms)
        self.profile.set_controls(self.controllers.controls())
        self._refresh()

    def truth(self) -> dict[int, Values]:
        """unit -> channel -> value a client reading the registers now decodes."""
        truth = {unit: dict(meter.shown) for unit, meter in self.meters.items()}
        return truth | self.controllers.truth()

    def _refresh(self) -> None:
        for meter in self.meters.values():
            meter.refresh(self.profile.sample)
