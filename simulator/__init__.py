"""Simulated devices for demos and tests: Modbus meters with realistic, seeded profiles.

``MeterSimulator`` serves a simulated home over Modbus TCP in the caller's event loop and
reports the ground truth of every register; ``homewatt-sim meters`` runs it as a process.
"""

from simulator.control import ControlServer, route
from simulator.meters import (
    GRID_UNIT,
    HEAT_PUMP_UNIT,
    INVERTER_UNIT,
    SUNSPEC_BASE,
    SUNSPEC_METER_UNIT,
    WATER_HEATER_UNIT,
    MeterBank,
    SimulatedMeter,
)
from simulator.profiles import HomeConfig, HomeProfile, PowerSample
from simulator.server import MeterSimulator
from simulator.unit_faults import (
    Fault,
    FaultKind,
    InvalidFault,
    SimulatorError,
    UnknownUnit,
    parse_fault,
)

__all__ = [
    "GRID_UNIT",
    "HEAT_PUMP_UNIT",
    "INVERTER_UNIT",
    "SUNSPEC_BASE",
    "SUNSPEC_METER_UNIT",
    "WATER_HEATER_UNIT",
    "ControlServer",
    "Fault",
    "FaultKind",
    "HomeConfig",
    "HomeProfile",
    "InvalidFault",
    "MeterBank",
    "MeterSimulator",
    "PowerSample",
    "SimulatedMeter",
    "SimulatorError",
    "UnknownUnit",
    "parse_fault",
    "route",
]
