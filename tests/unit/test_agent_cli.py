from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from edge_agent import cli
from edge_agent.config import AgentConfig
from edge_agent.modbus_bus import FakeModbusBus, image_handler
from edge_agent.ports import ModbusBus
from protocols.modbus import SDM120, encode_map

CONFIG = """
gateway_id = "gw-test"

[[buses]]
name = "main"
kind = "tcp"
host = "127.0.0.1"
port = 5020

[[meters]]
id = "heatpump"
model = "sdm120"
bus = "main"
unit = 2

[[meters]]
id = "waterheater"
model = "sdm120"
bus = "main"
unit = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    path = write(tmp_path, CONFIG.replace("unit = 3", "unit = 300"))
    assert cli.main(["read", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: meters.1.unit: ")


def test_unknown_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, CONFIG.replace('kind = "tcp"', 'kind = "tcp"\nbaud = 9600'))
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "config error: buses.0.baud: unknown key" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["read", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_explains_each_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "read" in out and "wiring" in out and "run" in out


def fake_buses(answering_units: set[int]) -> Mapping[str, ModbusBus]:
    image = encode_map(SDM120, {f.channel: 1.0 for f in SDM120.fields})
    full = {address: image.get(address, 0) for address in range(0x200)}
    return {"main": FakeModbusBus(image_handler({u: full for u in answering_units}))}


def test_read_prints_a_table_and_exits_0_when_all_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "build_buses", lambda config: fake_buses({2, 3}))
    assert cli.main(["read", "--config", str(write(tmp_path, CONFIG))]) == 0
    out = capsys.readouterr().out
    assert "heatpump" in out and "waterheater" in out and "energy_import" in out
    assert "2 of 2 Modbus meters answered" in out


def test_read_shows_an_offline_meter_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "build_buses", lambda config: fake_buses({2}))
    assert cli.main(["read", "--config", str(write(tmp_path, CONFIG))]) == 1
    out = capsys.readouterr().out
    waterheater = [line for line in out.splitlines() if line.startswith("waterheater")]
    assert len(waterheater) == 1 and "error: unit 3: no answer" in waterheater[0]
    assert "failed: waterheater" in out


def test_run_without_runtime_exits_1_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "edge_agent.runtime", None)  # import raises ImportError
    assert cli.main(["run", "--config", str(write(tmp_path, CONFIG))]) == 1
    assert "agent runtime (edge_agent.runtime) cannot be loaded" in capsys.readouterr().err


def test_run_hands_the_config_to_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []

    class Runtime:
        @staticmethod
        def run(config: AgentConfig) -> int:
            seen.append(config)
            return 0

    monkeypatch.setitem(sys.modules, "edge_agent.runtime", Runtime)
    assert cli.main(["run", "--config", str(write(tmp_path, CONFIG))]) == 0
    assert seen[0].gateway_id == "gw-test"


def test_example_config_is_valid() -> None:
    from edge_agent.config import load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "agent.toml"
    config = load_config(example)
    assert config.gateway_id == "gw-demo"
    assert {m.id: (m.model, m.unit) for m in config.meters} == {
        "grid": ("sdm630", 1), "heatpump": ("sdm120", 2), "waterheater": ("sdm120", 3),
        "pv": ("sunspec", 126), "grid_sunspec": ("sunspec", 240),
    }
