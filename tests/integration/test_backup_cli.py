"""``homewatt-cloud backup | restore | verify-backup``: round trip and error paths."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_sync.backup_manifest import MANIFEST_NAME
from cloud_sync.cli import main
from tests.integration.conftest_backup import fill_with_store
from tests.integration.conftest_cloud import db_url  # noqa: F401 - fixture
from tests.services import free_port, throwaway_postgres

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HOMEWATT_DB_URL", raising=False)
    monkeypatch.setenv("HOMEWATT_DATA_DIR", str(tmp_path))
    return tmp_path


def test_cli_round_trip_reports_every_table_and_the_rto(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOMEWATT_DB_URL", db_url)
    fill_with_store(db_url, readings_per_gateway=100)
    assert main(["backup", "--out", str(tmp_path / "bk")]) == 0
    out = capsys.readouterr().out
    assert "dumped" in out and MANIFEST_NAME in out
    manifest = json.loads((tmp_path / "bk" / MANIFEST_NAME).read_text())
    assert manifest["tables"]["readings"]["rows"] == 200

    assert main(["verify-backup", "--from", str(tmp_path / "bk")]) == 0
    out = capsys.readouterr().out
    assert "ok   readings: 200 rows" in out
    assert "verify-backup PASSED" in out and "(RTO)" in out

    assert main(["restore", "--from", str(tmp_path / "bk")]) == 1  # the source holds data
    assert "--force" in capsys.readouterr().err
    if db_url.startswith("sqlite"):
        target = f"sqlite:///{tmp_path / 'other.sqlite'}"
        assert main(["restore", "--from", str(tmp_path / "bk"), "--to", target]) == 0
    else:
        with throwaway_postgres() as target:
            assert main(["restore", "--from", str(tmp_path / "bk"), "--to", target]) == 0
    assert "restore PASSED" in capsys.readouterr().out


def test_cli_refuses_a_tampered_backup_with_exit_1(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill_with_store(f"sqlite:///{env / 'cloud.sqlite'}", readings_per_gateway=100)
    assert main(["backup", "--out", str(env / "bk")]) == 0
    dump = env / "bk" / "cloud.sqlite"
    dump.write_bytes(dump.read_bytes()[:-1] + b"\x01")
    capsys.readouterr()
    assert main(["verify-backup", "--from", str(env / "bk")]) == 1
    err = capsys.readouterr().err
    assert "backup is corrupt" in err and "Traceback" not in err


def test_cli_error_paths_are_one_line_with_the_right_exit_code(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # no database yet: nothing to back up
    assert main(["backup", "--out", str(env / "bk")]) == 1
    assert "no SQLite database" in capsys.readouterr().err
    # an output path below a regular file cannot be created
    fill_with_store(f"sqlite:///{env / 'cloud.sqlite'}", readings_per_gateway=100)
    (env / "a-file").write_text("x")
    assert main(["backup", "--out", str(env / "a-file" / "bk")]) == 1
    assert "cannot write to" in capsys.readouterr().err
    # a directory that holds no backup
    (env / "empty").mkdir()
    assert main(["verify-backup", "--from", str(env / "empty")]) == 2
    assert "holds no backup" in capsys.readouterr().err
    # a PostgreSQL URL naming no database
    monkeypatch.setenv("HOMEWATT_DB_URL", "postgresql+psycopg://")
    assert main(["backup", "--out", str(env / "bk2")]) == 2
    assert "names no database" in capsys.readouterr().err
    # PostgreSQL down (nothing listens on the port)
    monkeypatch.setenv("HOMEWATT_DB_URL",
                       f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/homewatt")
    assert main(["backup", "--out", str(env / "bk3")]) == 1
    assert "database unavailable" in capsys.readouterr().err
    # bad arguments
    with pytest.raises(SystemExit) as missing_out:
        main(["backup"])
    assert missing_out.value.code == 2


def test_cli_cannot_restore_a_sqlite_backup_into_postgresql(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill_with_store(f"sqlite:///{env / 'cloud.sqlite'}", readings_per_gateway=100)
    assert main(["backup", "--out", str(env / "bk")]) == 0
    assert main(["restore", "--from", str(env / "bk"), "--to",
                 "postgresql+psycopg://u@127.0.0.1/db"]) == 2
    assert "cannot be restored into postgresql" in capsys.readouterr().err
