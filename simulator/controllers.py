"""Writable devices of the simulated home: pure register logic, validation and the write log.

Two Modbus units with holding registers from address 0 (FC3 read, FC6/FC16 write):

- unit 20, water-heater switch: register 0 = 1 on / 0 off (default 1).
- unit 21, heat-pump controller: register 0 = flow setpoint in 0.1 °C, 250..600 (default 450
  = 45.0 °C); register 1 = 1 on / 0 off (default 1).

A write with any value outside its register's range is rejected as a whole (Modbus exception 3,
illegal data value) and changes nothing. Every accepted write of every register is logged with
the simulated time it took effect, the same value written twice included: the log is the ground
truth for "the device was actuated exactly once".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simulator.profiles import Controls

WATER_HEATER_SWITCH_UNIT, HEAT_PUMP_CONTROLLER_UNIT = 20, 21


class IllegalValue(ValueError):
    """A written value outside its register's range; nothing was changed."""


class IllegalAddress(LookupError):
    """A write or read outside the unit's registers."""


@dataclass(frozen=True)
class HoldingRegister:
    """One writable register: truth ``channel`` = raw / ``divisor``; raw in ``low..high``."""

    channel: str
    low: int
    high: int
    default: int
    divisor: int = 1


@dataclass(frozen=True)
class ControllerSpec:
    """A writable unit; ``registers[i]`` sits at holding address ``i``."""

    unit: int
    name: str
    model: str
    registers: tuple[HoldingRegister, ...]


_SWITCH = HoldingRegister("switch", 0, 1, default=1)
CONTROLLERS: dict[int, ControllerSpec] = {spec.unit: spec for spec in (
    ControllerSpec(WATER_HEATER_SWITCH_UNIT, "water_heater_switch", "switch", (_SWITCH,)),
    ControllerSpec(HEAT_PUMP_CONTROLLER_UNIT, "heat_pump_controller", "heat_pump_controller",
                   (HoldingRegister("setpoint", 250, 600, default=450, divisor=10), _SWITCH)),
)}

WriteLog = dict[tuple[int, int], list[tuple[int, int]]]


class ControllerBank:
    """Current holding registers of units 20 and 21 and every accepted write."""

    def __init__(self) -> None:
        self.specs = CONTROLLERS
        self._holding: dict[tuple[int, int], int] = {
            (unit, address): reg.default
            for unit, spec in CONTROLLERS.items() for address, reg in enumerate(spec.registers)}
        self._writes: WriteLog = {}

    def read(self, unit: int, address: int) -> int:
        """Raw register value. Raises :class:`IllegalAddress` (unknown unit or register)."""
        try:
            return self._holding[(unit, address)]
        except KeyError:
            raise IllegalAddress(f"unit {unit} has no holding register {address}") from None

    def write(self, unit: int, address: int, values: Sequence[int], ts_ms: int) -> None:
        """Write ``values`` from ``address`` on, all or nothing, and log each register.

        Raises :class:`IllegalAddress` or :class:`IllegalValue`; then nothing changed.
        """
        spec = self.specs.get(unit)
        if spec is None or address < 0 or address + len(values) > len(spec.registers):
            raise IllegalAddress(f"unit {unit}: no holding registers {address}.."
                                 f"{address + len(values) - 1}")
        for offset, value in enumerate(values):
            reg = spec.registers[address + offset]
            if not reg.low <= value <= reg.high:
                raise IllegalValue(f"unit {unit} register {address + offset} ({reg.channel}):"
                                   f" {value} outside {reg.low}..{reg.high}")
        for offset, value in enumerate(values):
            key = (unit, address + offset)
            self._holding[key] = value
            self._writes.setdefault(key, []).append((ts_ms, value))

    def writes(self) -> WriteLog:
        """(unit, register) -> [(ts_ms, value), ...] in write order; a copy."""
        return {key: list(history) for key, history in self._writes.items()}

    def truth(self) -> dict[int, dict[str, float | None]]:
        """unit -> channel -> value (switch 0/1, setpoint in °C)."""
        return {unit: {reg.channel: self._holding[(unit, address)] / reg.divisor
                       for address, reg in enumerate(spec.registers)}
                for unit, spec in self.specs.items()}

    def controls(self) -> Controls:
        """What the registers tell the home's loads to do."""
        return Controls(
            water_heater_on=self.read(WATER_HEATER_SWITCH_UNIT, 0) == 1,
            heat_pump_on=self.read(HEAT_PUMP_CONTROLLER_UNIT, 1) == 1,
            heat_pump_setpoint_c=self.read(HEAT_PUMP_CONTROLLER_UNIT, 0) / 10.0,
        )
