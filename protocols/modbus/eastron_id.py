"""Telling Eastron SDM meters apart from what they answer (pure; ``homewatt-agent scan``).

Eastron meters carry no model string, so the model is read off the registers their manuals
document (holding registers, FC3, float32 like the measurements):

- every SDM has its Modbus node address at holding ``0x0014`` (40021, 1..247): when it reads
  back as the unit id we asked, the device is certainly an Eastron-style meter;
- the three-phase models (SDM630, SDM72D) have a *system type* at holding ``0x000A``
  (40011: 1 = 1P2W, 2 = 3P3W, 3 = 3P4W); the single-phase SDM120 has none and refuses it;
- of the two, only the SDM630 has the neutral current (input ``0x00E0``) of its map.

A meter powers itself from the line it measures, so one that answers at all shows a mains
voltage and frequency: that plausibility check is the fallback for a meter whose holding
registers cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.modbus.decode import encode_value
from protocols.modbus.registers import DataType

__all__ = ["FREQUENCY", "NEUTRAL_CURRENT", "NODE_ADDRESS", "SYSTEM_TYPE", "VOLTAGE_L1",
           "EastronIdentity", "eastron_holding_image", "identify_eastron", "mains_plausible"]

VOLTAGE_L1 = 0x0000  # input, float32 V
FREQUENCY = 0x0046  # input, float32 Hz
NEUTRAL_CURRENT = 0x00E0  # input, float32 A (SDM630 only)
SYSTEM_TYPE = 0x000A  # holding, float32 1/2/3 (three-phase models)
NODE_ADDRESS = 0x0014  # holding, float32 1..247
BAUD_RATE = 0x001C  # holding, float32 code (0 2400, 1 4800, 2 9600, 3 19200, 4 38400)
_SYSTEM_TYPES = {1.0: "1P2W", 2.0: "3P3W", 3.0: "3P4W"}


def mains_plausible(voltage: float | None, frequency: float | None) -> bool:
    """A self-powered meter that answers sees mains: 80..300 V and 45..65 Hz."""
    return (voltage is not None and frequency is not None
            and 80.0 <= voltage <= 300.0 and 45.0 <= frequency <= 65.0)


@dataclass(frozen=True)
class EastronIdentity:
    model: str  # "sdm630" | "sdm72" | "sdm120": a key of protocols.modbus.METER_MAPS
    confirmed: bool  # the node address read back as the unit id
    note: str  # what the decision rests on, for the installer


def identify_eastron(unit: int, *, voltage: float | None, frequency: float | None,
                     node_address: float | None, system_type: float | None,
                     neutral_current_answered: bool) -> EastronIdentity | None:
    """The model from the register answers (``None`` where the device refused or the value
    is a marker); None when this is not an Eastron-style meter at all."""
    confirmed = node_address is not None and round(node_address) == unit
    if not confirmed and not mains_plausible(voltage, frequency):
        return None
    basis = (f"node address register reads {unit}" if confirmed
             else f"answers like an Eastron meter ({voltage:.0f} V, {frequency:.1f} Hz)")
    wiring = _SYSTEM_TYPES.get(round(system_type, 0)) if system_type is not None else None
    if wiring is None:
        return EastronIdentity("sdm120", confirmed, f"{basis}; single-phase (no system type)")
    model = "sdm630" if neutral_current_answered else "sdm72"
    return EastronIdentity(model, confirmed, f"{basis}; three-phase meter wired {wiring}")


def eastron_holding_image(model: str, unit: int, baud_code: int = 2) -> dict[int, int]:
    """The documented holding registers of an Eastron ``model`` at ``unit`` (the simulator
    serves these): node address and baud rate, plus the system type on three-phase models."""
    points: dict[int, float] = {NODE_ADDRESS: float(unit), BAUD_RATE: float(baud_code)}
    if model in ("sdm630", "sdm72"):
        points[SYSTEM_TYPE] = 3.0
    image: dict[int, int] = {}
    for address, value in points.items():
        high, low = encode_value(DataType.FLOAT32, value)
        image[address], image[address + 1] = high, low
    return image
