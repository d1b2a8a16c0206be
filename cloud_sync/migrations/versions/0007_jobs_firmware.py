"""Jobs (AWS IoT Jobs executions, notify-next outbox) and firmware rollouts.

Revision ID: 0007
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("in_progress_timeout_min", sa.Integer, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("completed_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "job_executions",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), primary_key=True),
        sa.Column("thing_name", sa.String(128), primary_key=True),
        sa.Column("execution_number", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_details", sa.Text, nullable=True),
        sa.Column("version_number", sa.Integer, nullable=False),
        sa.Column("queued_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("last_updated_at", sa.BigInteger, nullable=False),
        sa.Column("step_timeout_at", sa.BigInteger, nullable=True),
        sa.Column("in_progress_timeout_at", sa.BigInteger, nullable=True),
        sa.Column("last_client_token", sa.String(64), nullable=True),
    )
    # a thing's pending executions in order; the timeout sweeper's due scan
    op.create_index("ix_job_executions_thing", "job_executions",
                    ["thing_name", "status", "queued_at"])
    op.create_index("ix_job_executions_step_due", "job_executions", ["status", "step_timeout_at"])
    op.create_index("ix_job_executions_progress_due", "job_executions",
                    ["status", "in_progress_timeout_at"])
    op.create_table(
        "job_things",
        sa.Column("thing_name", sa.String(128), primary_key=True),
        sa.Column("next_job_id", sa.String(64), nullable=True),
        sa.Column("notify_pending", sa.Boolean, nullable=False),
        sa.Column("execution_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_job_things_notify", "job_things", ["notify_pending"])
    _firmware()


def _firmware() -> None:
    op.create_table(
        "firmware_bundles",
        sa.Column("bundle_id", sa.String(140), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "firmware_blocklist",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "gateway_groups",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "gateway_group_members",
        sa.Column("group_name", sa.String(64), sa.ForeignKey("gateway_groups.name"),
                  primary_key=True),
        sa.Column("gateway_id", sa.String(128), primary_key=True),
    )
    op.create_table(
        "firmware_rollouts",
        sa.Column("rollout_id", sa.String(64), sa.ForeignKey("jobs.job_id"), primary_key=True),
        sa.Column("bundle_id", sa.String(140), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("download_token", sa.String(64), nullable=False),
        sa.Column("targets_total", sa.Integer, nullable=False),
        sa.Column("notified", sa.Integer, nullable=False),
        sa.Column("rate_tokens", sa.Float, nullable=True),
        sa.Column("rate_at", sa.BigInteger, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_firmware_rollouts_status", "firmware_rollouts", ["status"])
    op.create_table(
        "rollout_targets",
        sa.Column("rollout_id", sa.String(64), sa.ForeignKey("firmware_rollouts.rollout_id"),
                  primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("gateway_id", sa.String(128), nullable=False),
        sa.Column("notified_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "gateway_firmware",
        sa.Column("gateway_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("reported_at", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    for table in ("gateway_firmware", "rollout_targets", "firmware_rollouts",
                  "gateway_group_members", "gateway_groups", "firmware_blocklist",
                  "firmware_bundles"):
        op.drop_table(table)
    op.drop_table("job_things")
    op.drop_table("job_executions")
    op.drop_table("jobs")
