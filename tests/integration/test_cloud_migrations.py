"""The Alembic schema goes up, down and up again on SQLite and PostgreSQL."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cloud_sync.db import migrate
from cloud_sync.db.engine import make_engine
from tests.integration.conftest_cloud import db_url  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
TABLES = {"gateways", "readings", "dead_letters"}


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        assert migrate.is_current(engine)
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
        migrate.downgrade(engine, "base")
        assert not TABLES & set(sa.inspect(engine).get_table_names())
        migrate.upgrade(engine)
        migrate.upgrade(engine)  # idempotent at every start
        inspector = sa.inspect(engine)
        assert inspector.get_pk_constraint("readings")["constrained_columns"] == [
            "gateway_id", "seq"]
        index = {i["name"]: i["column_names"] for i in inspector.get_indexes("readings")}
        assert index["ix_readings_gw_meter_channel_ts"] == [
            "gateway_id", "meter_id", "channel", "ts"]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_without_timescaledb_readings_is_a_plain_indexed_table(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            available = conn.scalar(sa.text(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"))
        if available:
            pytest.skip("TimescaleDB is installed here: the fallback path is not reachable")
        migrate.upgrade(engine)  # CREATE EXTENSION fails inside a savepoint, migration goes on
        with engine.connect() as conn:
            assert conn.scalar(sa.text(
                "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")) == 0
            kind = conn.scalar(sa.text("SELECT relkind FROM pg_class WHERE relname = 'readings'"))
        assert kind == "r"
        assert migrate.is_current(engine)
    finally:
        engine.dispose()
