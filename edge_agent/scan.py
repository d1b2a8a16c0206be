"""``homewatt-agent scan``: find and identify the Modbus devices on one bus.

Probing is bounded: each unit id in ``--units`` gets one request of ``--timeout`` to answer
(holding registers at SunSpec's first base address, 40000). Silence means nobody is there;
any answer, an exception response included, means a device is, and it is then identified:

- SunSpec: the ``'SunS'`` marker at 40000, 0 or 50000, the model chain walked, the common
  model's manufacturer/model/serial read (``protocols.modbus.sunspec``);
- Eastron SDM630 / SDM72 / SDM120: by the registers their manuals document
  (``protocols.modbus.eastron_id``).

So an empty bus of N ids costs at most N x timeout. The command line (progress, the
snippet) is :mod:`edge_agent.scan_cli`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from edge_agent.errors import BusConnectError, BusError
from edge_agent.ports import ModbusBus
from edge_agent.scan_snippet import Found
from protocols.errors import InvalidMessage
from protocols.modbus import sunspec
from protocols.modbus.decode import decode_words
from protocols.modbus.eastron_id import (
    FREQUENCY,
    NEUTRAL_CURRENT,
    NODE_ADDRESS,
    SYSTEM_TYPE,
    VOLTAGE_L1,
    identify_eastron,
)
from protocols.modbus.registers import DataType, RegisterKind

__all__ = ["Progress", "probe_unit", "scan_bus"]

log = logging.getLogger(__name__)

_MAX_MODELS = 64
Progress = Callable[[int, int, Found | None], None]  # (done, total, found or None)


async def _float(bus: ModbusBus, unit: int, kind: RegisterKind, address: int) -> float | None:
    """One float32, or None when the device refuses or does not answer it."""
    try:
        return decode_words(DataType.FLOAT32, await bus.read_registers(unit, kind, address, 2))
    except BusError:
        return None


async def _sunspec(bus: ModbusBus, unit: int, first: list[int]) -> Found | None:
    """``first`` is what the probe at 40000 returned (None-equivalent: empty, it refused)."""
    for base in sunspec.SCAN_BASES:
        if base == sunspec.SCAN_BASES[0]:
            words = first
        else:
            try:
                words = await bus.read_registers(unit, RegisterKind.HOLDING, base, 2)
            except BusError:
                continue
        if sunspec.is_sunspec_marker(words):
            return await _walk_sunspec(bus, unit, base)
    return None


async def _walk_sunspec(bus: ModbusBus, unit: int, base: int) -> Found:
    address, models, info = base + 2, [], None
    for _ in range(_MAX_MODELS):
        header = sunspec.parse_model_header(
            address, await bus.read_registers(unit, RegisterKind.HOLDING, address, 2))
        if header is None:
            break
        models.append(header.model_id)
        if header.model_id == sunspec.COMMON_MODEL_ID:
            words = await bus.read_registers(unit, RegisterKind.HOLDING, header.body_address,
                                             min(header.length, 66))
            try:
                info = sunspec.decode_common(words)
            except InvalidMessage:
                info = None
        address = sunspec.next_model_address(header)
    who = f"{info.manufacturer} {info.model}, serial {info.serial}" if info else "unnamed"
    inverter = any(m in sunspec.INVERTER_MODELS for m in models)
    meter = any(m in sunspec.METER_MODELS for m in models)
    if not (inverter or meter):
        return Found(unit, "sunspec", f"SunSpec device ({who}), models {models}",
                     usable=False)
    kind = "inverter" if inverter else "meter"
    return Found(unit, "sunspec", f"SunSpec {kind} ({who}), models {models}",
                 role="pv" if inverter else "grid")


async def _eastron(bus: ModbusBus, unit: int) -> Found | None:
    voltage = await _float(bus, unit, RegisterKind.INPUT, VOLTAGE_L1)
    frequency = await _float(bus, unit, RegisterKind.INPUT, FREQUENCY)
    node = await _float(bus, unit, RegisterKind.HOLDING, NODE_ADDRESS)
    system = await _float(bus, unit, RegisterKind.HOLDING, SYSTEM_TYPE)
    neutral = (system is not None
               and await _float(bus, unit, RegisterKind.INPUT, NEUTRAL_CURRENT) is not None)
    identity = identify_eastron(unit, voltage=voltage, frequency=frequency, node_address=node,
                                system_type=system, neutral_current_answered=neutral)
    if identity is None:
        return None
    return Found(unit, identity.model, f"Eastron {identity.model.upper()} ({identity.note})")


async def probe_unit(bus: ModbusBus, unit: int) -> Found | None:
    """Identify the device at ``unit``; None when nothing answers within the timeout."""
    try:
        first = await bus.read_registers(unit, RegisterKind.HOLDING, sunspec.SCAN_BASES[0], 2)
    except BusConnectError:
        raise  # the bus is down: no unit can answer, say so instead of "nothing found"
    except BusError as exc:
        if exc.exception_code is None:
            return None  # silence: no device at this id
        first = []  # it refused the address: a device is there, just not SunSpec at 40000
    try:
        found = await _sunspec(bus, unit, first) or await _eastron(bus, unit)
    except (BusError, InvalidMessage) as exc:
        return Found(unit, "unknown", f"answers, but identification failed: {exc}",
                     usable=False)
    return found or Found(unit, "unknown", "answers Modbus, but is neither SunSpec nor an "
                          "Eastron meter", usable=False)


async def scan_bus(bus: ModbusBus, units: Sequence[int],
                   progress: Progress | None = None) -> list[Found]:
    """Probe ``units`` one after the other (one bus master: no parallel requests)."""
    found: list[Found] = []
    for done, unit in enumerate(units, start=1):
        device = await probe_unit(bus, unit)
        if device is not None:
            found.append(device)
        if progress is not None:
            progress(done, len(units), device)
    return found
