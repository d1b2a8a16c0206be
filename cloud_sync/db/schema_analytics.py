"""Analytics tables (revision 0008), on the shared ``metadata``.

Rollups are keyed by the reading's own ``(gateway_id, meter_id, channel)``: they need no
registry to be computed, and a device's role (grid, pv, load) is joined in at query time.
Bucket starts are UTC epoch ms; hourly and daily buckets are the home's local hours and days.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud_sync.db.schema import metadata


def _series() -> list[sa.Column[str]]:
    return [sa.Column("gateway_id", sa.String(128), primary_key=True),
            sa.Column("meter_id", sa.String(64), primary_key=True),
            sa.Column("channel", sa.String(64), primary_key=True)]


def _bucket_table(name: str) -> sa.Table:
    return sa.Table(
        name, metadata, *_series(),
        sa.Column("bucket_ms", sa.BigInteger, primary_key=True),
        sa.Column("wh", sa.Double, nullable=False),
        sa.Column("flags", sa.SmallInteger, nullable=False),
    )


energy_15m = _bucket_table("energy_15m")
energy_hourly = _bucket_table("energy_hourly")

energy_daily = sa.Table(
    "energy_daily", metadata, *_series(),
    sa.Column("day", sa.String(10), primary_key=True),  # local date, YYYY-MM-DD
    sa.Column("start_ms", sa.BigInteger, nullable=False),
    sa.Column("end_ms", sa.BigInteger, nullable=False),
    sa.Column("wh", sa.Double, nullable=False),
    sa.Column("flags", sa.SmallInteger, nullable=False),
)

# Written in the ingest transaction: readings in [from_ms, to_ms) of a series changed. ``gen``
# grows on every new mark, so a job deletes only the marks it has seen.
analytics_dirty = sa.Table(
    "analytics_dirty", metadata, *_series(),
    sa.Column("from_ms", sa.BigInteger, primary_key=True),
    sa.Column("to_ms", sa.BigInteger, nullable=False),
    sa.Column("gen", sa.BigInteger, nullable=False),
)

# One row while a job works on a series; a claim past ``expires_at`` (a dead job) is taken over.
analytics_claims = sa.Table(
    "analytics_claims", metadata, *_series(),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

# The zone a gateway's hourly/daily rows were computed in; a change rebuilds them.
analytics_zones = sa.Table(
    "analytics_zones", metadata,
    sa.Column("gateway_id", sa.String(128), primary_key=True),
    sa.Column("timezone", sa.String(64), nullable=False),
)

tariffs = sa.Table(
    "analytics_tariffs", metadata,
    sa.Column("home_id", sa.String(64), primary_key=True),
    sa.Column("valid_from_ms", sa.BigInteger, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),  # JSON of cloud_sync.analytics.tariffs.Tariff
)

prices = sa.Table(
    "analytics_prices", metadata,
    sa.Column("home_id", sa.String(64), primary_key=True),
    sa.Column("start_ms", sa.BigInteger, primary_key=True),
    sa.Column("end_ms", sa.BigInteger, nullable=False),
    sa.Column("import_price", sa.Double, nullable=False),
    sa.Column("export_price", sa.Double, nullable=True),
)

flexible_loads = sa.Table(
    "analytics_flexible_loads", metadata,
    sa.Column("home_id", sa.String(64), primary_key=True),
    sa.Column("meter_device_id", sa.String(200), primary_key=True),  # registry device ids
    sa.Column("actuator_device_id", sa.String(200), nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
)

schedules = sa.Table(
    "analytics_schedules", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("home_id", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(200), nullable=False),
    sa.Column("on_at", sa.String(5), nullable=False),  # local HH:MM
    sa.Column("off_at", sa.String(5), nullable=False),
    sa.Column("recommendation", sa.Text, nullable=False),  # JSON: what was accepted, and why
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("next_run_ms", sa.BigInteger, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
)
