"""setup's config editing: the scanned bus and its meters are replaced, every other table
and the installer's comments stay, and the result still loads."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.config_edit import replace_bus, set_gateway_id
from edge_agent.setup_cli import cli_provision

BEFORE = '''# my gateway
gateway_id = "gw-old"  # keep me
health_port = 9100

[mqtt]
url = "mqtt://broker.local:1883"

[[buses]]
name = "main"
kind = "tcp"
host = "10.0.0.9"

[[buses]]
name = "inverter"
kind = "tcp"
host = "10.0.0.20"

# the old grid meter
[[meters]]
id = "old-grid"
model = "sdm630"
bus = "main"
unit = 1

[[meters]]
id = "garage"
model = "s0"
[meters.s0]
pin = 17

[[meters]]
id = "pv"
model = "sunspec"
bus = "inverter"
unit = 126

[[actuators]]
id = "boiler"
kind = "modbus_switch"
bus = "main"
unit = 20
address = 0
[actuators.interlocks]
min_on_s = 60
'''

SNIPPET = '''# homewatt-agent scan: 1 device(s)
[[buses]]
name = "main"
kind = "rtu"
serial_port = "/dev/ttyUSB0"

# unit 1: Eastron SDM630
[[meters]]
id = "sdm630-1"
model = "sdm630"
role = "load"
bus = "main"
unit = 1
'''


def test_replace_bus_swaps_only_the_scanned_bus_and_its_meters(tmp_path: Path) -> None:
    after = replace_bus(BEFORE, "main", SNIPPET)
    path = tmp_path / "agent.toml"
    path.write_text(after)
    config = load_config(path)
    assert [(b.name, b.kind) for b in config.buses] == [("inverter", "tcp"), ("main", "rtu")]
    assert [m.id for m in config.meters] == ["garage", "pv", "sdm630-1"]
    assert config.meters[0].s0 is not None and config.meters[0].s0.pin == 17
    assert [a.id for a in config.actuators] == ["boiler"]
    assert config.actuators[0].interlocks.min_on_s == 60
    assert "# my gateway" in after and "# keep me" in after
    assert "# the old grid meter" not in after  # its comment went with it
    assert after.endswith(SNIPPET)


def test_a_first_scan_appends_to_a_config_without_buses() -> None:
    assert replace_bus('gateway_id = "gw-1"\n', "main", SNIPPET) == (
        'gateway_id = "gw-1"\n\n' + SNIPPET)


def test_set_gateway_id_replaces_or_adds_the_top_level_key(tmp_path: Path) -> None:
    changed = set_gateway_id(BEFORE, "gw-0042")
    added = set_gateway_id("[mqtt]\nurl = \"mqtt://x:1883\"\n", "gw-0042")
    path = tmp_path / "a.toml"
    path.write_text(changed)
    assert load_config(path).gateway_id == "gw-0042"
    assert changed.count("gateway_id") == 1
    assert added.startswith('gateway_id = "gw-0042"\n[mqtt]')


def test_setup_provisions_through_the_registered_provision_command(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def with_provision() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        commands = parser.add_subparsers(dest="command")
        provision = commands.add_parser("provision")
        provision.add_argument("--config", type=Path)
        provision.add_argument("--claim-cert")

        def handler(args: argparse.Namespace) -> int:
            calls.append([str(args.config), args.claim_cert])
            return 0

        provision.set_defaults(handler=handler)
        return parser

    def without() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        parser.add_subparsers(dest="command").add_parser("run")
        return parser

    config = tmp_path / "agent.toml"
    assert cli_provision(config, ["--claim-cert", "claim.pem"], parser=with_provision) == 0
    assert calls == [[str(config), "claim.pem"]]
    assert cli_provision(config, [], parser=without) is None


def test_setup_runs_this_builds_provision_command_and_reports_bad_arguments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The real homewatt-agent parser has `provision`; without its required arguments after
    # `--` it answers like the command itself would: exit 2 with its usage.
    assert cli_provision(tmp_path / "agent.toml", []) == 2
    assert "--claim-cert" in capsys.readouterr().err
