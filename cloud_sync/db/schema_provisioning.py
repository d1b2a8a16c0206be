"""Tables of fleet provisioning (revision 0006): templates, claims, certificates.

They mirror the migration and are never ``create_all``-ed (see ``cloud_sync.db.schema``).
Secrets are stored only as SHA-256 digests: the claim code and the ownership token.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud_sync.db import schema_registry  # noqa: F401 - homes, which claims refer to
from cloud_sync.db.schema import metadata

provisioning_templates = sa.Table(
    "provisioning_templates",
    metadata,
    sa.Column("name", sa.String(36), primary_key=True),
    sa.Column("thing_name", sa.String(128), nullable=False),  # pattern, e.g. gw-{SerialNumber}
    sa.Column("parameters", sa.Text, nullable=False),  # JSON object: name -> regex
    sa.Column("device_configuration", sa.Text, nullable=False),  # JSON object: str -> str
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# A one-time code an installer gets for a home; the CSR carries it (challengePassword).
provisioning_claims = sa.Table(
    "provisioning_claims",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("code_digest", sa.String(64), nullable=False, unique=True),
    sa.Column("home_id", sa.String(64), sa.ForeignKey("homes.id"), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("certificates_issued", sa.Integer, nullable=False),
    sa.Column("consumed_at", sa.BigInteger, nullable=True),
    sa.Column("gateway_id", sa.String(128), nullable=True),  # what it provisioned
)

certificates = sa.Table(
    "certificates",
    metadata,
    # SHA-256 of the DER certificate in hex: AWS IoT's certificateId, and the fingerprint
    sa.Column("certificate_id", sa.String(64), primary_key=True),
    sa.Column("common_name", sa.String(128), nullable=False),
    sa.Column("gateway_id", sa.String(128), nullable=True),  # set when activated
    sa.Column("claim_id", sa.String(32), sa.ForeignKey("provisioning_claims.id"),
              nullable=True),
    sa.Column("home_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(24), nullable=False),  # PENDING_ACTIVATION|ACTIVE|REVOKED
    sa.Column("pem", sa.Text, nullable=False),
    sa.Column("not_after", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("activated_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Column("token_digest", sa.String(64), nullable=True, unique=True),
    sa.Column("token_expires_at", sa.BigInteger, nullable=True),
    sa.Column("token_used_at", sa.BigInteger, nullable=True),
    # the RegisterThing that used the token, so a broker redelivery gets the same answer
    sa.Column("register_request_digest", sa.String(64), nullable=True),
    sa.Column("register_response", sa.Text, nullable=True),
)
