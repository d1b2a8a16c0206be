"""``homewatt-cloud`` migrate and the admin commands against a real SQLite file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from cloud_sync.bootstrap import build_service, load_settings
from cloud_sync.cli import main
from tests.auth_helpers import TEST_JWT_SECRET

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


def _json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def test_admin_bootstraps_a_home_its_owner_a_key_a_gateway_and_devices(
        env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["admin", "create-home", "--name", "Müller", "--timezone", "Europe/Berlin",
                 "--id", "home-m", "--json"]) == 0
    (home,) = _json_lines(capsys)
    assert home == {"home_id": "home-m", "name": "Müller", "timezone": "Europe/Berlin"}
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["admin", "create-user", "--email", "Anna@Example.com", "--password-stdin",
                 "--home", "home-m", "--role", "owner", "--json"]) == 0
    (user,) = _json_lines(capsys)
    assert (user["email"], user["homes"]) == ("anna@example.com", {"home-m": "owner"})
    assert main(["admin", "create-api-key", "--name", "script", "--home", "home-m",
                 "--json"]) == 0
    (key,) = _json_lines(capsys)
    assert str(key["api_key"]).startswith(f"hw_{key['key_id']}_")
    assert main(["admin", "add-gateway", "gw-m", "--home", "home-m", "--json"]) == 0
    assert _json_lines(capsys)[0]["home_id"] == "home-m"
    assert main(["admin", "add-device", "gw-m", "grid", "--kind", "meter", "--role", "grid",
                 "--model", "sdm630", "--json"]) == 0
    assert main(["admin", "add-device", "gw-m", "boiler", "--capabilities",
                 "switch_on,switch_off", "--json"]) == 0
    meter, boiler = _json_lines(capsys)
    assert (meter["device_id"], meter["kind"], meter["role"], meter["home_id"]) == \
        ("gw-m.grid", "meter", "grid", "home-m")
    assert (boiler["device_id"], boiler["kind"], boiler["capabilities"]) == \
        ("gw-m.boiler", "actuator", ["switch_on", "switch_off"])
    # the key and the password work against the API of the same database
    service = build_service(load_settings(jwt_secret=TEST_JWT_SECRET))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app),
                                     base_url="http://cloud") as client:
            token = await client.post("/api/v1/auth/token", data={
                "username": "anna@example.com", "password": "a long enough password"})
            assert token.status_code == 200
            devices = await client.get("/api/v1/homes/home-m/devices",
                                       headers={"X-API-Key": str(key["api_key"])})
        assert [d["id"] for d in devices.json()["items"]] == ["gw-m.boiler", "gw-m.grid"]
    finally:
        service.engine.dispose()


@pytest.mark.parametrize("args, words", [
    (["create-home", "--name", "x", "--timezone", "Nowhere/Land"], "not an IANA time zone"),
    (["create-api-key", "--name", "x"], "give --operator or at least one --home"),
    (["create-api-key", "--name", "x", "--home", "h", "--role", "king"], "not a role"),
    (["create-user", "--email", "not-an-address"], "is not an e-mail address"),
    (["add-device", "gw-1", "m1", "--kind", "meter"], "--role: a meter needs a role"),
    (["add-device", "gw-1", "m1", "--capabilities", "fly"], "fly not an action"),
    (["add-device", "gw-1"], "give GATEWAY_ID and LOCAL_ID"),
    (["add-gateway", "gw-1", "--home", "no-such-home"], "home 'no-such-home' does not exist"),
    (["create-api-key", "--name", "x", "--home", "no-such-home"], "does not exist"),
])
def test_admin_bad_input_is_exit_2_naming_what_to_fix(
        env: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str) -> None:
    assert main(["admin", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_short_password_is_refused_before_anything_is_written(
        env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["admin", "create-user", "--email", "a@b.example", "--password-stdin"]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    assert not (env / "cloud.sqlite").exists()
