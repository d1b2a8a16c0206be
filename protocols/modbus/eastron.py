"""Eastron SDM120 / SDM630 / SDM72 register maps: input registers (FC4), float32, high word first.

Addresses are the 0-based PDU addresses of the vendors' published maps (the manuals number
them 30001-based: 30001 is address 0x0000). Every value is an IEEE 754 float32 in two registers.

Sign: Eastron meters report active power signed, + import / - export, with energy counters
split into import (0x0048) and export (0x004A) in kWh: our grid convention already, so
``sign`` stays 1 and energy is scaled by 1000 to Wh (kvarh to varh likewise).

Sources (cross-checked): Eastron "SDM630 Modbus Protocol" V1.5 / "SDM120 Modbus Protocol",
"SDM72D-M-2 Modbus Protocol", and the SDM_Energy_Meter (reaper7) and evcc/mbmd register tables.

Adding an Eastron model (SDM230, SDM220...) is a new tuple of rows below, no new code.
"""

from __future__ import annotations

from protocols.modbus.registers import ChannelKind, DataType, Field, RegisterKind, RegisterMap
from protocols.models import Unit

__all__ = ["SDM72", "SDM120", "SDM630"]

_KWH = 1000.0  # kWh (and kvarh) on the device -> Wh (varh) on the wire

# (channel, address, unit, scale, kind)
_Row = tuple[str, int, Unit, float, ChannelKind]
_I, _C = ChannelKind.INSTANT, ChannelKind.COUNTER
V, A, W = Unit.VOLT, Unit.AMPERE, Unit.WATT
VA, VAR, HZ, NONE = Unit.VOLT_AMPERE, Unit.VAR, Unit.HERTZ, Unit.NONE
WH, VARH = Unit.WATT_HOUR, Unit.VARH


def _phases(name: str, first: int, unit: Unit) -> list[_Row]:
    """``name_l1..l3`` at three consecutive float32 addresses starting at ``first``."""
    return [(f"{name}_l{n}", first + 2 * (n - 1), unit, 1.0, _I) for n in (1, 2, 3)]


def _build(model: str, rows: list[_Row]) -> RegisterMap:
    fields = tuple(
        Field(channel, address, DataType.FLOAT32, unit, scale=scale, kind=kind)
        for channel, address, unit, scale, kind in rows
    )
    return RegisterMap(model=model, register_kind=RegisterKind.INPUT, fields=fields)


_SDM120_ROWS: list[_Row] = [
    ("voltage", 0x0000, V, 1.0, _I),
    ("current", 0x0006, A, 1.0, _I),
    ("power", 0x000C, W, 1.0, _I),
    ("apparent_power", 0x0012, VA, 1.0, _I),
    ("reactive_power", 0x0018, VAR, 1.0, _I),
    ("power_factor", 0x001E, NONE, 1.0, _I),
    ("frequency", 0x0046, HZ, 1.0, _I),
    ("energy_import", 0x0048, WH, _KWH, _C),
    ("energy_export", 0x004A, WH, _KWH, _C),
    ("reactive_energy_import", 0x004C, VARH, _KWH, _C),
    ("reactive_energy_export", 0x004E, VARH, _KWH, _C),
    ("energy_total", 0x0156, WH, _KWH, _C),
]

_SDM630_ROWS: list[_Row] = [
    *_phases("voltage", 0x0000, V),
    *_phases("current", 0x0006, A),
    *_phases("power", 0x000C, W),
    *_phases("apparent_power", 0x0012, VA),
    *_phases("reactive_power", 0x0018, VAR),
    *_phases("power_factor", 0x001E, NONE),
    ("voltage", 0x002A, V, 1.0, _I),  # average line-to-neutral
    ("current", 0x0030, A, 1.0, _I),  # sum of line currents
    ("power", 0x0034, W, 1.0, _I),
    ("apparent_power", 0x0038, VA, 1.0, _I),
    ("reactive_power", 0x003C, VAR, 1.0, _I),
    ("power_factor", 0x003E, NONE, 1.0, _I),
    ("frequency", 0x0046, HZ, 1.0, _I),
    ("energy_import", 0x0048, WH, _KWH, _C),
    ("energy_export", 0x004A, WH, _KWH, _C),
    ("reactive_energy_import", 0x004C, VARH, _KWH, _C),
    ("reactive_energy_export", 0x004E, VARH, _KWH, _C),
    ("current_n", 0x00E0, A, 1.0, _I),  # neutral current
    ("energy_total", 0x0156, WH, _KWH, _C),
    *[(f"energy_import_l{n}", 0x015A + 2 * (n - 1), WH, _KWH, _C) for n in (1, 2, 3)],
    *[(f"energy_export_l{n}", 0x0160 + 2 * (n - 1), WH, _KWH, _C) for n in (1, 2, 3)],
]

# SDM72D-M V2: the original SDM72D publishes only total power, energies and 0x0500/0x0502;
# the V2 map adds per-phase values at the SDM630 addresses. An SDM72D v1 answers the
# per-phase requests with an exception response, so configure it as a reduced map.
_SDM72_ROWS: list[_Row] = [
    *_phases("voltage", 0x0000, V),
    *_phases("current", 0x0006, A),
    *_phases("power", 0x000C, W),
    ("current", 0x0030, A, 1.0, _I),
    ("power", 0x0034, W, 1.0, _I),
    ("power_factor", 0x003E, NONE, 1.0, _I),
    ("frequency", 0x0046, HZ, 1.0, _I),
    ("energy_import", 0x0048, WH, _KWH, _C),
    ("energy_export", 0x004A, WH, _KWH, _C),
    ("energy_total", 0x0156, WH, _KWH, _C),
]

SDM120: RegisterMap = _build("sdm120", _SDM120_ROWS)
SDM630: RegisterMap = _build("sdm630", _SDM630_ROWS)
SDM72: RegisterMap = _build("sdm72", _SDM72_ROWS)
