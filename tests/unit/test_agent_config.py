"""The agent config rejects bad files with one message naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, load_config
from edge_agent.errors import ConfigError

BASE = 'gateway_id = "gw-1"\n[[buses]]\nname = "main"\nkind = "tcp"\nhost = "127.0.0.1"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ('[[actuators]]\nid = "wh"\nkind = "relay"\n', "actuators.0", "set pin"),
        ('[[actuators]]\nid = "wh"\nkind = "modbus_switch"\nbus = "main"\n', "actuators.0",
         "set bus and address"),
        ('[[actuators]]\nid = "wh"\nkind = "modbus_switch"\nbus = "other"\naddress = 0\n', "",
         "names bus 'other'"),
        ('[[actuators]]\nid = "hp"\nkind = "modbus_setpoint"\nbus = "main"\naddress = 0\n'
         "[actuators.interlocks]\nsetpoint_min = 60\nsetpoint_max = 30\n", "actuators.0.interlocks",
         "setpoint_min"),
        ('[commands]\ndedup_max_ids = 5\n', "commands.dedup_max_ids", "greater than or equal"),
        ('[mqtt]\nurl = "http://x"\n', "mqtt", "mqtt:// or mqtts://"),
        ("broken = \n", "", ""),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(tmp_path: Path, extra: str, key: str,
                                               message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, BASE + extra))
    if not message:  # TOML itself is broken: the message says where
        assert "not valid TOML" in str(caught.value)
        return
    assert caught.value.key == key
    assert message in str(caught.value)


def test_unknown_key_is_named_with_its_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "colour = 3\n" + BASE))
    assert caught.value.key == "colour"
    assert "unknown key" in str(caught.value)


def test_missing_gateway_id_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gateway_id: required key is missing"):
        load_config(write(tmp_path, "[mqtt]\n"))


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEWATT_MQTT__URL", "mqtts://broker.example:8883")
    config = load_config(write(tmp_path, BASE))
    assert config.mqtt.url == "mqtts://broker.example:8883"


def test_state_files_default_under_data_dir() -> None:
    config = AgentConfig(gateway_id="gw", data_dir=Path("/srv/hw"))
    assert config.buffer_path == Path("/srv/hw/buffer.sqlite")
    assert config.dedup_path == Path("/srv/hw/commands.sqlite")


def test_shipped_example_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[2] / "examples" / "agent.toml")
    assert {m.id for m in config.meters} >= {"grid", "pv"}
