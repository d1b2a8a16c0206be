"""``homewatt-cloud`` migrate and admin add-gateway against a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_sync.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HOMEWATT_DB_URL", raising=False)
    monkeypatch.setenv("HOMEWATT_DATA_DIR", str(tmp_path))
    return tmp_path


def test_migrate_creates_the_default_sqlite_file(env: Path) -> None:
    assert main(["migrate"]) == 0
    assert (env / "cloud.sqlite").exists()


def test_add_gateway_reports_created_then_existing_as_json(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "add-gateway", "gw-7", "--json"]) == 0
    assert main(["admin", "add-gateway", "gw-7", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["created"] for line in lines] == [True, False]


def test_bad_gateway_id_is_exit_2_with_a_clear_message(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "add-gateway", "bad id!"]) == 2
    assert "must match" in capsys.readouterr().err


def test_bad_setting_is_exit_2_naming_the_variable(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOMEWATT_MQTT_URL", "http://nope")
    assert main(["migrate"]) == 2
    assert "HOMEWATT_MQTT_URL" in capsys.readouterr().err


def test_help_and_unknown_command_exit_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    assert help_exit.value.code == 0
    with pytest.raises(SystemExit) as bad_exit:
        main(["frobnicate"])
    assert bad_exit.value.code == 2
