"""Home Assistant discovery payloads checked against Home Assistant's documented schema
(tests/ha_schema.py): every channel of every meter model we read, and the switches."""

from __future__ import annotations

import json

import pytest

from edge_agent.ha_discovery import sensor_config, sensor_kind, switch_config
from protocols.modbus import SDM72, SDM120, SDM630, model_register_map
from protocols.models import Unit
from tests.ha_schema import check_discovery, template_key

MAPS = [("sdm630", SDM630), ("sdm120", SDM120), ("sdm72", SDM72),
        ("sunspec", model_register_map(103, 0)), ("sunspec", model_register_map(203, 0))]


@pytest.mark.parametrize(("model", "rmap"), MAPS, ids=[m.model for _, m in MAPS])
def test_every_exposed_channel_is_a_valid_home_assistant_sensor(model: str, rmap: object
                                                                ) -> None:
    exposed = 0
    for field in rmap.fields:  # type: ignore[attr-defined]
        kind = sensor_kind(field.channel, field.unit)
        if kind is None:
            assert field.unit is Unit.VARH, field  # only reactive energy has no HA class
            continue
        topic, payload = sensor_config(discovery_prefix="homeassistant", prefix="homewatt",
                                       gateway="gw-1", meter="grid", model=model,
                                       channel=field.channel, kind=kind)
        assert check_discovery(topic, payload) == [], (topic, payload)
        assert template_key(json.loads(payload)) == field.channel
        exposed += 1
    assert exposed > 0


def test_energy_counters_feed_the_energy_dashboard_in_kwh() -> None:
    for channel in ("energy_import", "energy_export", "energy_production"):
        kind = sensor_kind(channel, Unit.WATT_HOUR)
        assert kind is not None
        _topic, payload = sensor_config(discovery_prefix="homeassistant", prefix="homewatt",
                                        gateway="gw-1", meter="grid", model="sdm630",
                                        channel=channel, kind=kind)
        config = json.loads(payload)
        assert (config["device_class"], config["state_class"], config["unit_of_measurement"]) \
            == ("energy", "total_increasing", "kWh")
        assert kind.scale == 0.001
    power = sensor_kind("power", Unit.WATT)
    assert power is not None
    assert (power.device_class, power.state_class, power.unit) == ("power", "measurement", "W")


def test_switch_config_is_valid_and_not_optimistic() -> None:
    topic, payload = switch_config(discovery_prefix="homeassistant", prefix="homewatt",
                                   gateway="gw-1", actuator="waterheater-switch",
                                   version="0.1.0")
    assert check_discovery(topic, payload) == []
    config = json.loads(payload)
    assert topic == "homeassistant/switch/gw-1/homewatt_gw-1_waterheater-switch/config"
    assert config["command_topic"] == "homewatt/gw-1/waterheater-switch/set"
    assert config["optimistic"] is False


def test_the_schema_checker_rejects_what_home_assistant_rejects() -> None:
    bad = json.dumps({"state_topic": "x", "device_class": "energy", "state_class": "measurement",
                      "unit_of_measurement": "kWh", "colour": "red"}).encode()
    problems = check_discovery("homeassistant/sensor/gw/x/config", bad)
    assert any("unknown key 'colour'" in p for p in problems)
    assert any("not allowed for energy" in p for p in problems)
    assert check_discovery("homeassistant/light/gw/x/config", b"{}") != []
    wrong_unit = json.dumps({"state_topic": "x", "device_class": "power",
                             "unit_of_measurement": "kWh"}).encode()
    assert any("unit 'kWh'" in p for p in check_discovery("homeassistant/sensor/g/x/config",
                                                          wrong_unit))
