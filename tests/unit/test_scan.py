"""scan's pure parts: unit-id ranges, Eastron identification from register answers, and a
snippet the agent's own config loader accepts; plus probing fake buses (silence, refusals)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_agent.config import BusSettings, load_config
from edge_agent.errors import BusConnectError, BusError
from edge_agent.modbus_bus import FakeModbusBus, ModbusRequest, image_handler
from edge_agent.scan import probe_unit, scan_bus
from edge_agent.scan_snippet import Found, format_units, parse_units, render_snippet
from protocols.modbus import SDM120, SDM630, encode_map
from protocols.modbus.eastron_id import eastron_holding_image, identify_eastron


def test_unit_ranges_parse_and_print_back() -> None:
    assert parse_units("1-3, 126,240,2") == [1, 2, 3, 126, 240]
    assert format_units([1, 2, 3, 126, 240]) == "1-3,126,240"
    assert format_units([5]) == "5"
    for bad, says in (("0-3", "1..247"), ("4-2", "1..247"), ("x", "not a unit id"),
                      ("", "no unit ids"), ("1-248", "1..247")):
        with pytest.raises(ValueError, match=says):
            parse_units(bad)


def test_eastron_models_follow_from_their_documented_registers() -> None:
    common = {"voltage": 230.0, "frequency": 50.0}
    sdm630 = identify_eastron(1, **common, node_address=1.0, system_type=3.0,
                              neutral_current_answered=True)
    sdm72 = identify_eastron(1, **common, node_address=1.0, system_type=3.0,
                             neutral_current_answered=False)
    sdm120 = identify_eastron(2, **common, node_address=2.0, system_type=None,
                              neutral_current_answered=False)
    unconfirmed = identify_eastron(3, **common, node_address=None, system_type=None,
                                   neutral_current_answered=False)
    assert sdm630 is not None and sdm630.model == "sdm630" and sdm630.confirmed
    assert sdm72 is not None and sdm72.model == "sdm72"
    assert sdm120 is not None and sdm120.model == "sdm120"
    assert unconfirmed is not None and not unconfirmed.confirmed
    assert "230 V, 50.0 Hz" in unconfirmed.note
    # Not a self-powered meter on mains, and no node address: not an Eastron meter.
    assert identify_eastron(4, voltage=0.0, frequency=0.0, node_address=None,
                            system_type=None, neutral_current_answered=False) is None
    assert identify_eastron(4, voltage=None, frequency=None, node_address=7.0,
                            system_type=None, neutral_current_answered=False) is None


def eastron_image(rmap_model: str, unit: int) -> dict[int, int]:
    rmap = SDM630 if rmap_model == "sdm630" else SDM120
    values = dict.fromkeys(rmap.channels, 1.0) | {"voltage": 231.0, "voltage_l1": 231.0,
                                                  "frequency": 50.0}
    return encode_map(rmap, values) | eastron_holding_image(rmap_model, unit)


async def test_probe_identifies_eastron_meters_and_skips_silent_ids() -> None:
    # image_handler serves both register kinds from one image: a missing register answers
    # exception 2 and an unknown unit stays silent, as on a real bus.
    bus = FakeModbusBus(image_handler({1: eastron_image("sdm630", 1),
                                       2: eastron_image("sdm120", 2)}))
    found = await scan_bus(bus, [1, 2, 3])
    assert [(f.unit, f.model, f.usable) for f in found] == [(1, "sdm630", True),
                                                            (2, "sdm120", True)]
    silent = [r for r in bus.requests if r.unit == 3]
    assert len(silent) == 1  # one request per empty id: the scan is bounded


async def test_a_bus_that_cannot_open_is_reported_not_scanned_empty() -> None:
    def down(_request: ModbusRequest) -> list[int]:
        raise BusConnectError("bus main: cannot connect to /dev/ttyUSB0")

    with pytest.raises(BusConnectError):
        await probe_unit(FakeModbusBus(down), 1)


async def test_a_device_that_answers_but_is_unknown_is_listed_unusable() -> None:
    def refuses(request: ModbusRequest) -> list[int]:
        raise BusError("refused", exception_code=1)

    found = await probe_unit(FakeModbusBus(refuses), 9)
    assert found is not None and found.model == "unknown" and not found.usable


def test_the_snippet_is_a_valid_agent_config(tmp_path: Path) -> None:
    bus = BusSettings(name="rs485", kind="rtu", serial_port="/dev/ttyUSB0", baudrate=9600,
                      timeout_s=0.3)
    found = [Found(1, "sdm630", "Eastron SDM630"), Found(2, "sdm120", "Eastron SDM120"),
             Found(126, "sunspec", "SunSpec inverter", role="pv"),
             Found(20, "unknown", "answers Modbus", usable=False)]
    snippet = render_snippet(bus, found, "/dev/ttyUSB0, units 1-247")
    path = tmp_path / "agent.toml"
    path.write_text('gateway_id = "gw-1"\n' + snippet)
    config = load_config(path)
    assert [(m.id, m.model, m.role, m.unit) for m in config.meters] == [
        ("sdm630-1", "sdm630", "load", 1), ("sdm120-2", "sdm120", "load", 2),
        ("sunspec-126", "sunspec", "pv", 126)]
    assert config.buses[0].serial_port == "/dev/ttyUSB0"
    assert "# unit 20: answers Modbus" in snippet
    assert tomllib.loads(snippet)["buses"][0]["kind"] == "rtu"
