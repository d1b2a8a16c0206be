"""Table definitions used by queries. The schema itself is owned by Alembic
(``cloud_sync/migrations``); these mirror the head revision and are never ``create_all``-ed."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Times are epoch milliseconds (BIGINT) everywhere, like the wire contract.
gateways = sa.Table(
    "gateways",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),  # the AWS IoT thing name
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # revision 0004: the home it serves (None until an installer assigns it), a display name,
    # and soft deletion (its readings stay; telemetry from a deleted gateway is dead-lettered)
    sa.Column("home_id", sa.String(64), sa.ForeignKey("homes.id"), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
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

# -- commands (revision 0002) ----------------------------------------------------------------

devices = sa.Table(
    "devices",
    metadata,
    # revision 0004: ``{gateway_id}.{local_id}`` by default, so two homes may both have a
    # "water-heater" and re-registering a device is idempotent
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("gateway_id", sa.String(128), sa.ForeignKey("gateways.id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # "meter" | "actuator" (0004)
    sa.Column("capabilities", sa.Text, nullable=False),  # JSON list of action names
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
    # revision 0004: the id the gateway uses (meter_id in readings, device_id on the command
    # wire), the meter's role in the home's energy flow, a free-form model and display name
    sa.Column("local_id", sa.String(64), nullable=False),
    sa.Column("role", sa.String(8), nullable=True),  # meters: "grid" | "pv" | "load"
    sa.Column("model", sa.String(64), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.UniqueConstraint("gateway_id", "local_id", name="uq_devices_gateway_local"),
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("command_id", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(200), nullable=False),
    sa.Column("gateway_id", sa.String(128), nullable=False),
    # revision 0004: the device's id on its gateway when the command was made (the wire id)
    sa.Column("local_id", sa.String(64), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # JSON object
    sa.Column("priority", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("sent_at", sa.BigInteger, nullable=True),
    sa.Column("delivered_at", sa.BigInteger, nullable=True),
    sa.Column("completed_at", sa.BigInteger, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("result", sa.Text, nullable=True),  # JSON object from the gateway's ack
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("traceparent", sa.String(55), nullable=True),  # revision 0003: W3C trace context
    sa.UniqueConstraint("device_id", "idempotency_key", name="uq_commands_device_key"),
)

# One row per open command; it stays (re-published every redelivery timeout) until the
# command reaches a final status, so a PUBACK without a gateway ack never ends delivery.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("command_id", sa.String(64), sa.ForeignKey("commands.command_id"),
              nullable=False, unique=True),
    sa.Column("gateway_id", sa.String(128), nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),  # 0 safety, 1 normal
    sa.Column("available_at", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("published_at", sa.BigInteger, nullable=True),
)
