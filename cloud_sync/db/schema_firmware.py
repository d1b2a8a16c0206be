"""Firmware tables (revision 0007): bundles, the known-bad list, gateway groups, rollouts and
what each gateway reports it runs. A rollout is one Jobs job (``jobs.job_id``)."""

from __future__ import annotations

import sqlalchemy as sa

from cloud_sync.db.schema import metadata

firmware_bundles = sa.Table(
    "firmware_bundles",
    metadata,
    sa.Column("bundle_id", sa.String(140), primary_key=True),  # <name>-<version>
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),  # the signed envelope, as uploaded
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),  # awaiting_payload | ready
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

firmware_blocklist = sa.Table(
    "firmware_blocklist",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

gateway_groups = sa.Table(
    "gateway_groups",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

gateway_group_members = sa.Table(
    "gateway_group_members",
    metadata,
    sa.Column("group_name", sa.String(64), sa.ForeignKey("gateway_groups.name"),
              primary_key=True),
    sa.Column("gateway_id", sa.String(128), primary_key=True),
)

firmware_rollouts = sa.Table(
    "firmware_rollouts",
    metadata,
    sa.Column("rollout_id", sa.String(64), sa.ForeignKey("jobs.job_id"), primary_key=True),
    sa.Column("bundle_id", sa.String(140), nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON: target, rate, abort, timeouts
    # active | paused | canceled | aborted | completed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("download_token", sa.String(64), nullable=False),
    sa.Column("targets_total", sa.Integer, nullable=False),
    sa.Column("notified", sa.Integer, nullable=False),
    sa.Column("rate_tokens", sa.Float, nullable=True),
    sa.Column("rate_at", sa.BigInteger, nullable=True),
    # a replica works on a rollout only while it holds this lease (no lock held meanwhile)
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# The resolved target list in notification order; ``notified_at`` is set as the rate allows.
rollout_targets = sa.Table(
    "rollout_targets",
    metadata,
    sa.Column("rollout_id", sa.String(64), sa.ForeignKey("firmware_rollouts.rollout_id"),
              primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("gateway_id", sa.String(128), nullable=False),
    sa.Column("notified_at", sa.BigInteger, nullable=True),
)

gateway_firmware = sa.Table(
    "gateway_firmware",
    metadata,
    sa.Column("gateway_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("reported_at", sa.BigInteger, nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),
)
