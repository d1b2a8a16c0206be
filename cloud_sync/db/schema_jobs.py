"""Tables of the Jobs service and of firmware rollouts (revision 0007), on the shared metadata.

Times are epoch milliseconds like every other table; the Jobs wire format's epoch seconds are
derived when a reply is built.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud_sync.db.schema import metadata

# An AWS IoT "job": a document for a set of things. A firmware rollout is one job.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),  # JSON object, at most 32 KB (AWS)
    sa.Column("status", sa.String(24), nullable=False),  # IN_PROGRESS | CANCELED | COMPLETED
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("in_progress_timeout_min", sa.Integer, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("completed_at", sa.BigInteger, nullable=True),
)

job_executions = sa.Table(
    "job_executions",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), primary_key=True),
    sa.Column("thing_name", sa.String(128), primary_key=True),
    sa.Column("execution_number", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_details", sa.Text, nullable=True),  # JSON string -> string map
    sa.Column("version_number", sa.Integer, nullable=False),
    sa.Column("queued_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("last_updated_at", sa.BigInteger, nullable=False),
    sa.Column("step_timeout_at", sa.BigInteger, nullable=True),
    sa.Column("in_progress_timeout_at", sa.BigInteger, nullable=True),
    sa.Column("last_client_token", sa.String(64), nullable=True),
)

# One row per thing that ever had an execution: the per-thing lock, the execution-number
# counter, and the notify-next outbox (``notify_pending`` set in the transaction that changed
# which execution is next; cleared by whoever published the notification).
job_things = sa.Table(
    "job_things",
    metadata,
    sa.Column("thing_name", sa.String(128), primary_key=True),
    sa.Column("next_job_id", sa.String(64), nullable=True),
    sa.Column("notify_pending", sa.Boolean, nullable=False),
    sa.Column("execution_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
