"""The energy series the API and the web app show, as JSON rows or CSV. Pure."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cloud_sync.analytics import calendar
from cloud_sync.analytics.home import HomeBucket
from cloud_sync.analytics.rollup import QUARTER_MS, Flag

Resolution = Literal["15m", "hour", "day", "month"]
RESOLUTIONS: tuple[Resolution, ...] = ("15m", "hour", "day", "month")
_ESTIMATED = int(Flag.GAP | Flag.REPLACED)


def by_month(days: Sequence[HomeBucket], tz: ZoneInfo) -> list[HomeBucket]:
    """Day buckets summed into local months (keyed by the month's first instant)."""
    months: dict[str, HomeBucket] = {}
    for d in days:
        name = calendar.month_of(d.start_ms, tz)
        m = months.get(name)
        if m is None:
            m = months[name] = HomeBucket(calendar.month_bounds(name, tz)[0])
        m.grid_import_wh += d.grid_import_wh
        m.grid_export_wh += d.grid_export_wh
        m.pv_wh += d.pv_wh
        m.has_grid = m.has_grid or d.has_grid
        m.flags |= d.flags
        for device, wh in d.loads.items():
            m.loads[device] = m.loads.get(device, 0.0) + wh
    return [months[k] for k in sorted(months)]


def bucket_end(start_ms: int, resolution: Resolution, tz: ZoneInfo) -> int:
    if resolution == "15m":
        return start_ms + QUARTER_MS
    if resolution == "hour":
        ts = start_ms + QUARTER_MS
        while calendar.hour_start(ts, tz) == start_ms:
            ts += QUARTER_MS
        return ts
    if resolution == "day":
        return calendar.day_bounds(calendar.day_of(start_ms, tz), tz)[1]
    return calendar.month_bounds(calendar.month_of(start_ms, tz), tz)[1]


def _kwh(wh: float) -> float:
    return round(wh / 1000, 4)


def item(b: HomeBucket, resolution: Resolution, tz: ZoneInfo) -> dict[str, Any]:
    end = bucket_end(b.start_ms, resolution, tz)
    return {
        "start": calendar.iso_local(b.start_ms, tz), "end": calendar.iso_local(end, tz),
        "start_ms": b.start_ms, "end_ms": end,
        "grid_import_kwh": _kwh(b.grid_import_wh), "grid_export_kwh": _kwh(b.grid_export_wh),
        "pv_kwh": _kwh(b.pv_wh), "consumption_kwh": _kwh(b.consumption_wh),
        "self_consumed_kwh": _kwh(b.self_consumed_wh),
        "devices": {d: _kwh(wh) for d, wh in sorted(b.loads.items())},
        "estimated": bool(b.flags & _ESTIMATED),
    }


def totals(buckets: Sequence[HomeBucket]) -> dict[str, float]:
    return {
        "grid_import_kwh": _kwh(sum(b.grid_import_wh for b in buckets)),
        "grid_export_kwh": _kwh(sum(b.grid_export_wh for b in buckets)),
        "pv_kwh": _kwh(sum(b.pv_wh for b in buckets)),
        "consumption_kwh": _kwh(sum(b.consumption_wh for b in buckets)),
        "self_consumed_kwh": _kwh(sum(b.self_consumed_wh for b in buckets)),
    }


def to_csv(items: Sequence[dict[str, Any]], devices: Sequence[str]) -> str:
    """One row per bucket; one kWh column per device (``device:<id>``)."""
    out = io.StringIO()
    fixed = ["start", "end", "grid_import_kwh", "grid_export_kwh", "pv_kwh", "consumption_kwh",
             "self_consumed_kwh", "estimated"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*fixed, *(f"device:{d}" for d in devices)])
    for row in items:
        writer.writerow([row[k] for k in fixed] + [row["devices"].get(d, 0.0) for d in devices])
    return out.getvalue()
