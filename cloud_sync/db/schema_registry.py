"""Registry and auth tables of revision 0004: homes, users and their roles, API keys.

Gateways and devices (also registry) are in :mod:`cloud_sync.db.schema` beside the tables that
reference them. Rows people and history refer to are soft-deleted (``deleted_at``), never
removed, so readings, commands and audit trails keep their meaning.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud_sync.db.schema import metadata

homes = sa.Table(
    "homes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),  # IANA, e.g. Europe/Berlin
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),  # stored lower-case
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("password_hash", sa.String(200), nullable=True),  # None: no password login
    sa.Column("operator", sa.Boolean, nullable=False),  # fleet-wide role
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("home_id", sa.String(64), sa.ForeignKey("homes.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # owner | member | installer
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# An API key is ``hw_<id>_<secret>``; only the SHA-256 of the secret is stored (the secret is
# 256 random bits, so a fast hash is enough: nothing to brute-force).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=True),  # creator
    sa.Column("operator", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

api_key_scopes = sa.Table(
    "api_key_scopes",
    metadata,
    sa.Column("api_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), primary_key=True),
    sa.Column("home_id", sa.String(64), sa.ForeignKey("homes.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
)
