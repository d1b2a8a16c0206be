"""``homewatt-cloud admin create-claim | add-template | certificates`` on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_sync.cli import main as cloud_main
from cloud_sync.db.engine import make_engine
from cloud_sync.db.provisioning_store import SqlProvisioningStore
from cloud_sync.db.store import make_db_breaker
from cloud_sync.provisioning_rules import claim_code_digest

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOMEWATT_DATA_DIR", str(tmp_path))
        yield tmp_path


def test_claim_is_printed_once_and_stored_as_a_digest(env: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cloud_main(["admin", "create-claim", "--home", "home-1"]) == 2  # no such home yet
    assert "create it: homewatt-cloud admin create-home" in capsys.readouterr().err
    assert cloud_main(["admin", "create-home", "--id", "home-1", "--name", "Müller"]) == 0
    capsys.readouterr()
    assert cloud_main(["admin", "create-claim", "--home", "home-1", "--json"]) == 0
    claim = json.loads(capsys.readouterr().out)
    assert claim["home_id"] == "home-1" and len(claim["claim_code"]) == 23
    database = (env / "cloud.sqlite").read_bytes()
    assert claim["claim_code"].encode() not in database
    assert claim_code_digest(claim["claim_code"]).encode() in database


@pytest.mark.parametrize(("argv", "problem"), [
    (["create-claim", "--home", "bad home"], "--home 'bad home': home_id"),
    (["create-claim", "--home", "h", "--ttl-hours", "0"], "--ttl-hours"),
    (["add-template", "t", "--thing-name", "x-{S}"], "uses S: declare each"),
    (["add-template", "t", "--thing-name", "x-{S}", "--param", "S"], "use NAME=VALUE"),
])
def test_bad_admin_input_exits_2_naming_the_flag(env: Path, capsys: pytest.CaptureFixture[str],
                                                 argv: list[str], problem: str) -> None:
    assert cloud_main(["admin", *argv]) == 2
    assert problem in capsys.readouterr().err


def test_template_is_stored_as_data(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["admin", "add-template", "shop-gw", "--thing-name", "shop-{Serial}",
            "--param", "Serial=[0-9]{8}", "--device-config", "tier=gold"]
    assert cloud_main(argv) == 0
    assert cloud_main(argv) == 0
    assert "created" in capsys.readouterr().out
    engine = make_engine(f"sqlite:///{env / 'cloud.sqlite'}")
    try:
        template = SqlProvisioningStore(engine, make_db_breaker(3, 1)).template("shop-gw")
    finally:
        engine.dispose()
    assert template is not None
    assert (template.thing_name, dict(template.parameters), dict(template.device_configuration)) \
        == ("shop-{Serial}", {"Serial": "[0-9]{8}"}, {"tier": "gold"})
    assert cloud_main(["admin", "certificates", "--json"]) == 0
