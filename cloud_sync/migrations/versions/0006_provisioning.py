"""Fleet provisioning: templates, one-time claims, certificates (revision 0006).

Seeds the default template ``homewatt-gateway``: thing name ``gw-{SerialNumber}``.

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

DEFAULT_TEMPLATE = {
    "name": "homewatt-gateway", "thing_name": "gw-{SerialNumber}",
    "parameters": json.dumps({"SerialNumber": "[A-Za-z0-9_-]{1,64}"}),
    "device_configuration": "{}", "enabled": True, "created_at": 0,
}


def upgrade() -> None:
    templates = op.create_table(
        "provisioning_templates",
        sa.Column("name", sa.String(36), primary_key=True),
        sa.Column("thing_name", sa.String(128), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("device_configuration", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(templates, [DEFAULT_TEMPLATE])
    op.create_table(
        "provisioning_claims",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("code_digest", sa.String(64), nullable=False, unique=True),
        sa.Column("home_id", sa.String(64), sa.ForeignKey("homes.id"), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("certificates_issued", sa.Integer, nullable=False),
        sa.Column("consumed_at", sa.BigInteger, nullable=True),
        sa.Column("gateway_id", sa.String(128), nullable=True),
    )
    op.create_index("ix_claims_home", "provisioning_claims", ["home_id"])
    op.create_table(
        "certificates",
        sa.Column("certificate_id", sa.String(64), primary_key=True),
        sa.Column("common_name", sa.String(128), nullable=False),
        sa.Column("gateway_id", sa.String(128), nullable=True),
        sa.Column("claim_id", sa.String(32), sa.ForeignKey("provisioning_claims.id"),
                  nullable=True),
        sa.Column("home_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("pem", sa.Text, nullable=False),
        sa.Column("not_after", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("activated_at", sa.BigInteger, nullable=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("token_digest", sa.String(64), nullable=True, unique=True),
        sa.Column("token_expires_at", sa.BigInteger, nullable=True),
        sa.Column("token_used_at", sa.BigInteger, nullable=True),
        sa.Column("register_request_digest", sa.String(64), nullable=True),
        sa.Column("register_response", sa.Text, nullable=True),
    )
    op.create_index("ix_certificates_gateway", "certificates", ["gateway_id"])
    op.create_index("ix_certificates_common_name", "certificates", ["common_name"])


def downgrade() -> None:
    # Dropping certificates loses which gateway holds which certificate; back up first
    # (homewatt-cloud backup). The certificates themselves stay valid at the broker.
    op.drop_index("ix_certificates_common_name", table_name="certificates")
    op.drop_index("ix_certificates_gateway", table_name="certificates")
    op.drop_table("certificates")
    op.drop_index("ix_claims_home", table_name="provisioning_claims")
    op.drop_table("provisioning_claims")
    op.drop_table("provisioning_templates")
