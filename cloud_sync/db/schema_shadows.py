"""The shadow service's table (revision 0009), on the shared metadata.

One row per shadow ever created: ``shadow_name`` is ``""`` for a thing's classic shadow. A
deleted shadow keeps its row with ``present`` false so the next one's version follows on (AWS).
``last_client_token`` / ``last_replies`` make a redelivered request (same ``clientToken`` as
the last accepted one) answer again instead of applying twice.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud_sync.db.schema import metadata

shadows = sa.Table(
    "shadows",
    metadata,
    sa.Column("thing_name", sa.String(128), primary_key=True),
    sa.Column("shadow_name", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("present", sa.Boolean, nullable=False),
    sa.Column("document", sa.Text, nullable=True),  # {"state": ..., "metadata": ...}
    sa.Column("last_client_token", sa.String(64), nullable=True),
    sa.Column("last_replies", sa.Text, nullable=True),  # JSON [[topic, payload], ...]
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
