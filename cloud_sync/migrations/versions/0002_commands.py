"""Commands: device registry, commands (idempotent per device), transactional outbox.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("gateway_id", sa.String(128), sa.ForeignKey("gateways.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("capabilities", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_devices_gateway", "devices", ["gateway_id"])
    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("gateway_id", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("sent_at", sa.BigInteger, nullable=True),
        sa.Column("delivered_at", sa.BigInteger, nullable=True),
        sa.Column("completed_at", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.UniqueConstraint("device_id", "idempotency_key", name="uq_commands_device_key"),
    )
    # rate limit: commands of a device in the last minute; queue bound: open per gateway
    op.create_index("ix_commands_device_created", "commands", ["device_id", "created_at"])
    op.create_index("ix_commands_gateway_status", "commands", ["gateway_id", "status"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("command_id", sa.String(64), sa.ForeignKey("commands.command_id"),
                  nullable=False, unique=True),
        sa.Column("gateway_id", sa.String(128), nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("available_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("published_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_outbox_due", "outbox", ["priority", "available_at"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("commands")
    op.drop_table("devices")
