"""Jobs (AWS IoT Jobs executions, notify-next outbox) and firmware rollouts.

Revision ID: 0007
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0003"
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


def downgrade() -> None:
    op.drop_table("job_things")
    op.drop_table("job_executions")
    op.drop_table("jobs")
