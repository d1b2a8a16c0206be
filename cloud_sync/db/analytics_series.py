"""Which rollup series exist, found with index lookups only (a loose index scan).

A rebuild over a fleet's history must not aggregate the whole ``readings`` table in one
statement (minutes on a year of data, past any statement timeout). Walking the index
``(gateway_id, meter_id, channel, ts)`` one distinct key at a time costs a few lookups per
series, whatever the number of readings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from cloud_sync.analytics.rollup import ROLLUP_SOURCE_CHANNELS
from cloud_sync.db.schema import readings


def _distinct(conn: sa.Connection, column: Any, where: list[Any]) -> Iterator[str]:
    last: str | None = None
    while True:
        cond = [*where] if last is None else [*where, column > last]
        value = conn.scalar(sa.select(sa.func.min(column)).where(*cond))
        if value is None:
            return
        last = str(value)
        yield last


def series_ranges(conn: sa.Connection, gateway_id: str | None = None
                  ) -> Iterator[tuple[str, str, str, int, int]]:
    """``(gateway, meter, channel, first ts, last ts)`` of every rollup-source series."""
    c = readings.c
    gateways = [gateway_id] if gateway_id is not None else list(_distinct(conn, c.gateway_id, []))
    for gw in gateways:
        for meter in list(_distinct(conn, c.meter_id, [c.gateway_id == gw])):
            for channel in ROLLUP_SOURCE_CHANNELS:
                key = [c.gateway_id == gw, c.meter_id == meter, c.channel == channel]
                lo = conn.scalar(sa.select(sa.func.min(c.ts)).where(*key))
                if lo is not None:
                    hi = conn.scalar(sa.select(sa.func.max(c.ts)).where(*key))
                    yield gw, meter, channel, int(lo), int(hi)
