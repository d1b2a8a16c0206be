"""Telemetry storage: gateways, readings (TimescaleDB hypertable where available), dead letters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)
# One chunk per day of epoch-ms timestamps.
_CHUNK_MS = 86_400_000


def _timescale_available() -> bool:
    """Try ``CREATE EXTENSION`` in a savepoint so its failure leaves the migration usable."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except sa.exc.DBAPIError as exc:
        log.info("TimescaleDB not available, readings is a plain indexed table: %s",
                 str(exc.orig).splitlines()[0] if exc.orig else exc)
        return False
    return True


def upgrade() -> None:
    op.create_table(
        "gateways",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    hypertable = _timescale_available()
    # A hypertable's unique keys must include the time column; resends carry the same ts,
    # so (gateway_id, seq, ts) still makes them no-ops.
    key = ["gateway_id", "seq", "ts"] if hypertable else ["gateway_id", "seq"]
    op.create_table(
        "readings",
        sa.Column("gateway_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("meter_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("quality", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint(*key, name="pk_readings"),
    )
    op.create_index("ix_readings_gw_meter_channel_ts", "readings",
                    ["gateway_id", "meter_id", "channel", "ts"])
    if hypertable:
        op.execute(sa.text(
            "SELECT create_hypertable('readings', 'ts', "
            f"chunk_time_interval => {_CHUNK_MS}, migrate_data => true)"))
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("topic", sa.String(256), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("replayed_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("readings")
    op.drop_table("gateways")
