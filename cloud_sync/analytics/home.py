"""A home's energy per bucket, from its meters' rollups and their roles. Pure.

Roles come from the registry: ``grid`` meters measure the connection (import and export),
``pv`` meters the production, ``load`` meters single devices. Consumption is the balance
``import - export + pv`` (what the home used, from the grid or its own PV); without a grid
meter it is the sum of the loads. Self-consumed PV is ``pv - export`` (never below zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["grid", "pv", "load"]


@dataclass(frozen=True)
class MeterRole:
    """A registered meter: the id readings carry (``meter_id``), its device id and role."""

    gateway_id: str
    meter_id: str
    device_id: str
    role: Role
    name: str = ""


@dataclass
class HomeBucket:
    """Energy (Wh) in one bucket starting at ``start_ms``."""

    start_ms: int
    grid_import_wh: float = 0.0
    grid_export_wh: float = 0.0
    pv_wh: float = 0.0
    loads: dict[str, float] = field(default_factory=dict)  # device id -> Wh
    has_grid: bool = False
    flags: int = 0

    @property
    def consumption_wh(self) -> float:
        if self.has_grid:
            return max(0.0, self.grid_import_wh - self.grid_export_wh + self.pv_wh)
        return sum(self.loads.values())

    @property
    def self_consumed_wh(self) -> float:
        """PV used in the home (not exported)."""
        return min(self.pv_wh, max(0.0, self.pv_wh - self.grid_export_wh))

    @property
    def net_wh(self) -> float:
        """+ drawn from the grid, - fed in."""
        return self.grid_import_wh - self.grid_export_wh


Row = tuple[str, str, str, int, float, int]  # gateway, meter, channel, bucket, wh, flags


def _add(bucket: HomeBucket, meter: MeterRole, channel: str, wh: float) -> None:
    if meter.role == "grid":
        bucket.has_grid = True
        if channel == "energy_import":
            bucket.grid_import_wh += wh
        elif channel == "energy_export":
            bucket.grid_export_wh += wh
    elif meter.role == "pv":
        # inverters count production; a meter on the PV circuit counts it as export
        if channel in ("energy_production", "energy_export"):
            bucket.pv_wh += wh
    elif channel == "energy_import":
        bucket.loads[meter.device_id] = bucket.loads.get(meter.device_id, 0.0) + wh


def home_buckets(rows: Iterable[Row], meters: Iterable[MeterRole]) -> list[HomeBucket]:
    """Combine per-meter rollup rows into home buckets, in time order.

    A PV meter that reports both ``energy_production`` and ``energy_export`` counts only
    production, so nothing is counted twice.
    """
    by_key: Mapping[tuple[str, str], MeterRole] = {(m.gateway_id, m.meter_id): m
                                                   for m in meters}
    rows = list(rows)
    producing = {(g, m) for g, m, c, *_ in rows if c == "energy_production"}
    out: dict[int, HomeBucket] = {}
    for gw, meter_id, channel, start, wh, flags in rows:
        meter = by_key.get((gw, meter_id))
        if meter is None:
            continue
        if meter.role == "pv" and channel == "energy_export" and (gw, meter_id) in producing:
            continue
        bucket = out.setdefault(start, HomeBucket(start))
        bucket.flags |= flags
        _add(bucket, meter, channel, wh)
    return [out[k] for k in sorted(out)]
