"""Table definitions used by queries. The schema itself is owned by Alembic
(``cloud_sync/migrations``); these mirror the head revision and are never ``create_all``-ed."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Times are epoch milliseconds (BIGINT) everywhere, like the wire contract.
gateways = sa.Table(
    "gateways",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

readings = sa.Table(
    "readings",
    metadata,
    sa.Column("gateway_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("meter_id", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("unit", sa.String(8), nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("quality", sa.String(8), nullable=False),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("topic", sa.String(256), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("replayed_at", sa.BigInteger, nullable=True),
)

READING_COLUMNS = ("gateway_id", "seq", "meter_id", "channel", "value", "unit", "ts", "quality")
