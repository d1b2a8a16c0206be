"""Backup -> restore -> verify round trips on SQLite and PostgreSQL, with data written by the
real stores; corrupt backups and non-empty targets are refused."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud_sync.backup import create_backup, restore_backup, verify_backup
from cloud_sync.backup_engines import dump_tool, table_digests
from cloud_sync.backup_manifest import MANIFEST_NAME, BackupError, Manifest
from cloud_sync.db import migrate
from cloud_sync.db.engine import make_engine
from cloud_sync.db.store import SqlTelemetryStore, make_db_breaker
from tests.integration.conftest_backup import fill_every_table, fill_with_store
from tests.integration.conftest_cloud import db_url, make_batch  # noqa: F401 - fixture
from tests.services import throwaway_postgres

pytestmark = pytest.mark.integration
DATA_TABLES = {"gateways", "readings", "dead_letters", "devices", "commands", "outbox"}


@contextmanager
def empty_target(kind_of: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database of the same engine as ``kind_of``."""
    if kind_of.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'cloud.sqlite'}"
        return
    with throwaway_postgres() as url:
        yield url


def test_backup_restore_verify_round_trip_matches_counts_and_checksums(
        db_url: str, tmp_path: Path) -> None:
    fill_with_store(db_url)
    manifest = create_backup(db_url, tmp_path / "bk")
    assert manifest.tables["readings"].rows == 600
    assert {n for n, d in manifest.tables.items() if d.rows} >= DATA_TABLES
    assert manifest.tables["outbox"].rows == manifest.tables["commands"].rows == 4
    assert manifest.alembic_revision is not None
    assert "password" not in manifest.source

    verified = verify_backup(tmp_path / "bk", server_url=db_url)
    assert verified.ok, [c.describe() for c in verified.checks]
    assert verified.restore_s > 0

    with empty_target(db_url, tmp_path) as target:
        restored = restore_backup(tmp_path / "bk", target)
        assert restored.ok, [c.describe() for c in restored.checks]
        assert dump_tool(target).snapshot() == dump_tool(db_url).snapshot()
        engine = make_engine(target)
        try:
            assert migrate.is_current(engine)
            assert SqlTelemetryStore(engine, make_db_breaker(3, 1)).count_readings("gw-1") == 300
        finally:
            engine.dispose()


def test_backup_taken_while_the_service_writes_matches_its_manifest(
        db_url: str, tmp_path: Path) -> None:
    fill_with_store(db_url, readings_per_gateway=100)
    engine = make_engine(db_url)
    store = SqlTelemetryStore(engine, make_db_breaker(3, 1))
    stop = threading.Event()
    written = threading.Event()

    def keep_writing() -> None:
        seq = 1000
        while not stop.is_set():
            store.ingest([make_batch(seq, 50, gw="gw-1")], [])
            seq += 50
            written.set()

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        assert written.wait(10)
        create_backup(db_url, tmp_path / "bk")
    finally:
        stop.set()
        writer.join(10)
        engine.dispose()
    report = verify_backup(tmp_path / "bk", server_url=db_url)
    assert report.ok, [c.describe() for c in report.checks]


def test_a_tampered_dump_is_refused_before_anything_is_restored(
        db_url: str, tmp_path: Path) -> None:
    fill_with_store(db_url, readings_per_gateway=100)
    manifest = create_backup(db_url, tmp_path / "bk")
    dump = tmp_path / "bk" / manifest.dump.name
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with empty_target(db_url, tmp_path) as target:
        with pytest.raises(BackupError, match="corrupt"):
            restore_backup(tmp_path / "bk", target)
        assert not dump_tool(target).has_data()
    with pytest.raises(BackupError, match="corrupt"):
        verify_backup(tmp_path / "bk", server_url=db_url)


def test_restore_refuses_a_target_with_data_unless_forced(db_url: str, tmp_path: Path) -> None:
    fill_with_store(db_url, readings_per_gateway=100)
    create_backup(db_url, tmp_path / "bk")
    before = dump_tool(db_url).snapshot()
    fill_with_store(db_url, readings_per_gateway=200)  # data written after the backup
    with pytest.raises(BackupError, match="--force"):
        restore_backup(tmp_path / "bk", db_url)
    report = restore_backup(tmp_path / "bk", db_url, force=True)
    assert report.ok, [c.describe() for c in report.checks]
    assert dump_tool(db_url).snapshot() == before


def test_a_directory_holding_a_backup_is_not_overwritten(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.sqlite'}"
    fill_with_store(url, readings_per_gateway=100)
    create_backup(url, tmp_path / "bk")
    first = (tmp_path / "bk" / MANIFEST_NAME).read_text()
    with pytest.raises(BackupError, match="already holds a backup"):
        create_backup(url, tmp_path / "bk")
    assert (tmp_path / "bk" / MANIFEST_NAME).read_text() == first
    assert Manifest.from_json(first).engine == "sqlite"


@pytest.mark.postgres
def test_checksums_are_identical_on_sqlite_and_postgresql(tmp_path: Path) -> None:
    sqlite_engine = make_engine(f"sqlite:///{tmp_path / 'a.sqlite'}")
    with throwaway_postgres() as pg_url:
        pg_engine = make_engine(pg_url)
        try:
            digests = []
            for engine in (sqlite_engine, pg_engine):
                migrate.upgrade(engine)
                fill_every_table(engine)
                with engine.connect() as conn:
                    digests.append(table_digests(conn))
        finally:
            pg_engine.dispose()
            sqlite_engine.dispose()
    assert digests[0] == digests[1]
    assert {n for n, d in digests[0][0].items() if d.rows} >= DATA_TABLES


def test_checksum_changes_when_one_value_changes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.sqlite'}")
    try:
        migrate.upgrade(engine)
        fill_every_table(engine)
        with engine.connect() as conn:
            before, _ = table_digests(conn)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE readings SET value = 0.30000000000000004 "
                                 "WHERE seq = 3 AND gateway_id = 'gw-1'"))
        with engine.connect() as conn:
            after, _ = table_digests(conn)
    finally:
        engine.dispose()
    assert after["readings"].rows == before["readings"].rows
    assert after["readings"].sha256 != before["readings"].sha256
    assert after["gateways"] == before["gateways"]
