"""Device shadows (AWS IoT Device Shadow documents, classic and named).

Revision ID: 0009
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadows",
        sa.Column("thing_name", sa.String(128), primary_key=True),
        sa.Column("shadow_name", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("present", sa.Boolean, nullable=False),
        sa.Column("document", sa.Text, nullable=True),
        sa.Column("last_client_token", sa.String(64), nullable=True),
        sa.Column("last_replies", sa.Text, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shadows")
