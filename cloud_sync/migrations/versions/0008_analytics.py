"""Analytics: energy rollups (15 min, hourly, daily), dirty marks and job claims, tariffs,
dynamic prices, flexible loads and accepted schedules.

The rollups are plain tables on every backend, TimescaleDB included: a continuous aggregate
can only aggregate within one bucket, while energy from a counter is the difference across
readings that may sit in other buckets, reset, or arrive days late (docs/analytics.md).

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def _series() -> list[sa.Column[str]]:
    return [sa.Column("gateway_id", sa.String(128), nullable=False),
            sa.Column("meter_id", sa.String(64), nullable=False),
            sa.Column("channel", sa.String(64), nullable=False)]


_KEY = ["gateway_id", "meter_id", "channel"]


def upgrade() -> None:
    for name in ("energy_15m", "energy_hourly"):
        op.create_table(
            name, *_series(),
            sa.Column("bucket_ms", sa.BigInteger, nullable=False),
            sa.Column("wh", sa.Double, nullable=False),
            sa.Column("flags", sa.SmallInteger, nullable=False),
            sa.PrimaryKeyConstraint(*_KEY, "bucket_ms", name=f"pk_{name}"),
        )
    op.create_table(
        "energy_daily", *_series(),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False),
        sa.Column("end_ms", sa.BigInteger, nullable=False),
        sa.Column("wh", sa.Double, nullable=False),
        sa.Column("flags", sa.SmallInteger, nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, "day", name="pk_energy_daily"),
    )
    op.create_table(
        "analytics_dirty", *_series(),
        sa.Column("from_ms", sa.BigInteger, nullable=False),
        sa.Column("to_ms", sa.BigInteger, nullable=False),
        sa.Column("gen", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, "from_ms", name="pk_analytics_dirty"),
    )
    op.create_table(
        "analytics_claims", *_series(),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, name="pk_analytics_claims"),
    )
    op.create_table(
        "analytics_zones",
        sa.Column("gateway_id", sa.String(128), primary_key=True),
        sa.Column("timezone", sa.String(64), nullable=False),
    )
    _create_tariff_tables()


def _create_tariff_tables() -> None:
    op.create_table(
        "analytics_tariffs",
        sa.Column("home_id", sa.String(64), nullable=False),
        sa.Column("valid_from_ms", sa.BigInteger, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("home_id", "valid_from_ms", name="pk_analytics_tariffs"),
    )
    op.create_table(
        "analytics_prices",
        sa.Column("home_id", sa.String(64), nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False),
        sa.Column("end_ms", sa.BigInteger, nullable=False),
        sa.Column("import_price", sa.Double, nullable=False),
        sa.Column("export_price", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("home_id", "start_ms", name="pk_analytics_prices"),
    )
    op.create_table(
        "analytics_flexible_loads",
        sa.Column("home_id", sa.String(64), nullable=False),
        sa.Column("meter_device_id", sa.String(200), nullable=False),
        sa.Column("actuator_device_id", sa.String(200), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("home_id", "meter_device_id", name="pk_analytics_flexible_loads"),
    )
    op.create_table(
        "analytics_schedules",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("home_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=False),
        sa.Column("on_at", sa.String(5), nullable=False),
        sa.Column("off_at", sa.String(5), nullable=False),
        sa.Column("recommendation", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("next_run_ms", sa.BigInteger, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_index("ix_analytics_schedules_due", "analytics_schedules",
                    ["active", "next_run_ms"])


def downgrade() -> None:
    for name in ("analytics_schedules", "analytics_flexible_loads", "analytics_prices",
                 "analytics_tariffs", "analytics_zones", "analytics_claims", "analytics_dirty",
                 "energy_daily", "energy_hourly", "energy_15m"):
        op.drop_table(name)
