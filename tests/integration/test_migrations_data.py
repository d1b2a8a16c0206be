"""Every Alembic migration goes down and up again with data present, on SQLite and
PostgreSQL; undoing the newest revision keeps the data of the tables and columns it leaves."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from cloud_sync.db import migrate
from cloud_sync.db.engine import make_engine
from tests.integration.conftest_analytics import ANALYTICS_TABLES
from tests.integration.conftest_backup import fill_every_table, table_rows
from tests.integration.conftest_cloud import db_url  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
DATA_TABLES = {"gateways", "readings", "dead_letters", "devices", "commands", "outbox", "homes",
               "users", "memberships", "api_keys", "api_key_scopes", *ANALYTICS_TABLES}


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    config = Config()
    config.set_main_option("script_location", migrate.SCRIPT_LOCATION)
    script = ScriptDirectory.from_config(config)
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def _project(rows: dict[str, tuple[list[str], list[tuple[object, ...]]]],
             keep: dict[str, list[str]]) -> dict[str, list[tuple[object, ...]]]:
    """Rows restricted to the columns in ``keep`` (per table), sorted."""
    out = {}
    for name, columns in keep.items():
        all_cols, data = rows[name]
        idx = [all_cols.index(c) for c in columns]
        out[name] = sorted((tuple(r[i] for i in idx) for r in data), key=repr)
    return out


def test_upgrade_downgrade_base_upgrade_with_data_in_every_table(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        fill_every_table(engine)
        assert {n for n, (_, rows) in table_rows(engine).items() if rows} >= DATA_TABLES
        migrate.downgrade(engine, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engine)
        assert migrate.is_current(engine)
        fill_every_table(engine)  # the rebuilt schema takes the same rows again
    finally:
        engine.dispose()


def test_each_downgrade_step_with_data_keeps_what_survives(db_url: str) -> None:
    """Walk down one revision at a time from head with data present; after each step the
    tables and columns that remain hold exactly the rows they held before."""
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        fill_every_table(engine)
        before = table_rows(engine)
        for revision in reversed(_revisions()[:-1]):
            migrate.downgrade(engine, revision)
            after = table_rows(engine)
            keep = {name: cols for name, (cols, _) in after.items()}
            assert _project(after, keep) == _project(before, keep), f"down to {revision}"
        # and back up: the data kept by the lowest step is still there at head
        migrate.upgrade(engine)
        assert migrate.is_current(engine)
        head = table_rows(engine)
        assert _project(head, keep) == _project(before, keep)
    finally:
        engine.dispose()
