"""Alembic environment: always run programmatically with a connection in ``attributes``
(see :mod:`cloud_sync.db.migrate`), never from an ini file or the environment."""

from __future__ import annotations

from alembic import context

from cloud_sync.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
