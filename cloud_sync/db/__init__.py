"""Database adapters: engine factory, table definitions, Alembic runner, the SQL store."""
