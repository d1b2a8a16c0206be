"""Registry and auth: homes, users with roles per home, API keys; gateways join homes; devices
get a gateway-local id, a kind (meter | actuator) and a role; commands keep the wire id.

Existing devices keep their id (it was both the API id and the wire id), so their ``local_id``
is that id; their free-form kind moves to ``model`` and they become actuators (only actuators
were registered before: devices existed to take commands). Commands get the ``local_id`` of
their device, which is the id they were sent with.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _registry_tables()
    with op.batch_alter_table("gateways") as batch:
        batch.add_column(sa.Column("home_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.BigInteger, nullable=True))
        batch.create_foreign_key("fk_gateways_home", "homes", ["home_id"], ["id"])
    op.create_index("ix_gateways_home", "gateways", ["home_id"])
    with op.batch_alter_table("devices") as batch:
        batch.alter_column("id", type_=sa.String(200), existing_nullable=False)
        batch.add_column(sa.Column("local_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("role", sa.String(8), nullable=True))
        batch.add_column(sa.Column("model", sa.String(64), nullable=True))
        batch.add_column(sa.Column("name", sa.String(200), nullable=True))
    op.execute("UPDATE devices SET local_id = id, model = kind, kind = 'actuator' "
               "WHERE kind <> 'meter'")
    op.execute("UPDATE devices SET local_id = id WHERE local_id IS NULL")
    with op.batch_alter_table("devices") as batch:
        batch.alter_column("local_id", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_devices_gateway_local", ["gateway_id", "local_id"])
    with op.batch_alter_table("commands") as batch:
        batch.alter_column("device_id", type_=sa.String(200), existing_nullable=False)
        batch.add_column(sa.Column("local_id", sa.String(64), nullable=True))
    op.execute("UPDATE commands SET local_id = device_id")
    with op.batch_alter_table("commands") as batch:
        batch.alter_column("local_id", existing_type=sa.String(64), nullable=False)


def _registry_tables() -> None:
    op.create_table(
        "homes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("operator", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("home_id", sa.String(64), sa.ForeignKey("homes.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_memberships_home", "memberships", ["home_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("operator", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "api_key_scopes",
        sa.Column("api_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), primary_key=True),
        sa.Column("home_id", sa.String(64), sa.ForeignKey("homes.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    # Devices and commands keep their ids and kinds; a device id longer than 64 characters (a
    # default "{gateway}.{local}" id) cannot go back and stops the downgrade with an error.
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("local_id")
        batch.alter_column("device_id", type_=sa.String(64), existing_nullable=False)
    with op.batch_alter_table("devices") as batch:
        batch.drop_constraint("uq_devices_gateway_local", type_="unique")
        batch.drop_column("name")
        batch.drop_column("model")
        batch.drop_column("role")
        batch.drop_column("local_id")
        batch.alter_column("id", type_=sa.String(64), existing_nullable=False)
    op.drop_index("ix_gateways_home", "gateways")
    with op.batch_alter_table("gateways") as batch:
        batch.drop_constraint("fk_gateways_home", type_="foreignkey")
        batch.drop_column("deleted_at")
        batch.drop_column("name")
        batch.drop_column("home_id")
    op.drop_table("api_key_scopes")
    op.drop_table("api_keys")
    op.drop_table("memberships")
    op.drop_table("users")
    op.drop_table("homes")
