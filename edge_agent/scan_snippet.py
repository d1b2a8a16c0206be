"""What ``homewatt-agent scan`` found, and the agent.toml snippet it prints (pure).

The snippet is ready to paste: a ``[[buses]]`` table with the settings the scan used and one
``[[meters]]`` table per identified device, each with a comment saying what it is and what to
check (the role cannot be read off a meter: which one sits at the grid connection is the
installer's knowledge). Devices that answered but could not be identified are listed as
comments, never as config the agent would fail on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.config import BusSettings

__all__ = ["Found", "format_units", "parse_units", "render_snippet"]

MAX_UNIT = 247


@dataclass(frozen=True)
class Found:
    """One device that answered during a scan."""

    unit: int
    model: str  # "sdm630" | "sdm120" | "sdm72" | "sunspec" | "unknown"
    description: str  # what it is, for the installer ("Eastron SDM630, three-phase ...")
    role: str = "load"  # suggested: "pv" for inverters, "grid" for SunSpec meters
    usable: bool = True  # False: answered, but the agent has no map for it

    @property
    def meter_id(self) -> str:
        return f"{self.model}-{self.unit}"


def parse_units(text: str) -> list[int]:
    """``"1-10,126,240"`` -> sorted unique unit ids; ``ValueError`` names the bad part."""
    units: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"{part!r} is not a unit id or range (e.g. 1-10,126)") from None
        if not 1 <= low <= high <= MAX_UNIT:
            raise ValueError(f"{part!r}: unit ids are 1..{MAX_UNIT}, ranges low-high")
        units.update(range(low, high + 1))
    if not units:
        raise ValueError("no unit ids given (e.g. 1-10,126)")
    return sorted(units)


def format_units(units: Sequence[int]) -> str:
    """The inverse of :func:`parse_units`: ``[1, 2, 3, 126]`` -> ``"1-3,126"``."""
    parts: list[str] = []
    ordered = sorted(set(units))
    start = prev = ordered[0] if ordered else 0
    for unit in [*ordered[1:], None]:
        if unit is not None and unit == prev + 1:
            prev = unit
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if unit is not None:
            start = prev = unit
    return ",".join(parts)


def _toml(value: str | int | float) -> str:
    # A JSON string of ASCII text is a valid TOML basic string.
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _bus_lines(bus: BusSettings) -> list[str]:
    keys: list[tuple[str, str | int | float]] = [("name", bus.name), ("kind", bus.kind)]
    if bus.kind == "rtu":
        assert bus.serial_port is not None  # BusSettings validates this
        keys += [("serial_port", bus.serial_port), ("baudrate", bus.baudrate),
                 ("parity", bus.parity), ("stopbits", bus.stopbits)]
    else:
        assert bus.host is not None
        keys += [("host", bus.host), ("port", bus.port)]
    keys.append(("timeout_s", bus.timeout_s))
    if bus.frame_gap_ms:
        keys.append(("frame_gap_ms", bus.frame_gap_ms))
    return ["[[buses]]", *(f"{key} = {_toml(value)}" for key, value in keys)]


def _meter_lines(bus: BusSettings, found: Found) -> list[str]:
    hint = {"load": 'set role = "grid" for the meter at the grid connection',
            "pv": "a PV inverter: role pv", "grid": "a grid meter: check it sits at the "
            "grid connection"}[found.role]
    return [f"# unit {found.unit}: {found.description}; {hint}", "[[meters]]",
            f"id = {_toml(found.meter_id)}", f"model = {_toml(found.model)}",
            f"role = {_toml(found.role)}", f"bus = {_toml(bus.name)}", f"unit = {found.unit}",
            "interval_s = 5"]


def render_snippet(bus: BusSettings, found: Sequence[Found], scanned: str) -> str:
    """The agent.toml part for ``bus`` and the devices ``found`` on it."""
    lines = [f"# homewatt-agent scan: {len(found)} device(s) on {scanned}", *_bus_lines(bus)]
    for device in found:
        lines.append("")
        if device.usable:
            lines += _meter_lines(bus, device)
        else:
            lines.append(f"# unit {device.unit}: {device.description} (not configured: no "
                         "register map for it)")
    return "\n".join(lines) + "\n"
