"""``mqtt.transport``: paho by default; awsiot only with mutual TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.errors import ConfigError


def _config(tmp_path: Path, mqtt: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'gateway_id = "gw-1"\n[mqtt]\n{mqtt}\n')
    return path


def test_paho_is_the_default_transport(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path, "")).mqtt.transport == "paho"


@pytest.mark.parametrize("mqtt", [
    'transport = "awsiot"\nurl = "mqtt://broker:1883"',
    'transport = "awsiot"\nurl = "mqtts://broker:8883"',
])
def test_awsiot_transport_needs_mutual_tls(tmp_path: Path, mqtt: str) -> None:
    with pytest.raises(ConfigError, match="transport awsiot connects with mutual TLS"):
        load_config(_config(tmp_path, mqtt))


def test_awsiot_transport_with_client_certificate(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, 'transport = "awsiot"\nurl = "mqtts://x.iot.eu-west-1'
                                 '.amazonaws.com:8883"\ncert_file = "/c"\nkey_file = "/k"'))
    assert config.mqtt.transport == "awsiot"


def test_unknown_transport_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.transport"):
        load_config(_config(tmp_path, 'transport = "websocket"'))
