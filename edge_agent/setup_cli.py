"""``homewatt-agent setup``: scan -> provision -> doctor, the installer's one command.

1. **scan** the bus given (``--serial`` or ``--host``, as ``scan`` takes them), show what was
   found and, once confirmed, write that bus and its meters into the config (other tables
   and comments are kept; the previous file is kept as ``<config>.bak``; nothing is written
   unless the result passes the config loader).
2. **provision**: runs ``homewatt-agent provision --config <config> [args after --]``, the
   fleet-provisioning command, when this build has it (it writes the certificate and broker
   settings into the config). Without it the step says so and setup goes on.
3. **doctor**: the full checklist; setup's exit code is doctor's (0 all passed, 1 failed).

Questions are asked on a terminal; elsewhere ``--yes`` answers them (without it nothing is
written and setup exits 2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from edge_agent.config import BusSettings, load_config
from edge_agent.config_edit import replace_bus, set_gateway_id
from edge_agent.doctor import ServiceUser, Status
from edge_agent.doctor_cli import DEFAULT_CONFIG, format_check, run_checks, service_user
from edge_agent.errors import BusConnectError, ConfigError
from edge_agent.file_access import share_with_service_user
from edge_agent.scan import scan_bus
from edge_agent.scan_cli import ProgressReport, bus_settings
from edge_agent.scan_snippet import Found, format_units, parse_units, render_snippet

__all__ = ["ProvisionStep", "SetupOptions", "add_parser", "cli_provision", "run", "setup"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
Ask = Callable[[str], bool]
ProvisionStep = Callable[[Path, Sequence[str]], "int | None"]
"""Provision the gateway with ``config`` (writing its TLS and broker settings into it);
returns the exit code, or None when this build cannot provision."""

TEMPLATE = """# homewatt edge agent: written by `homewatt-agent setup` (reference: README.md)
gateway_id = "gw-unprovisioned"
data_dir = "/var/lib/homewatt"
health_port = 9100

[clock]
sync = "kernel"
"""


@dataclass
class SetupOptions:
    config: Path
    bus: BusSettings | None  # None: --skip-scan
    units: list[int]
    gateway_id: str | None = None
    provision_args: list[str] = field(default_factory=list)
    skip_provision: bool = False
    user: ServiceUser = field(default_factory=ServiceUser.current)
    timeout_s: float = 5.0


def cli_provision(config: Path, extra: Sequence[str], *,
                  parser: Callable[[], argparse.ArgumentParser] | None = None) -> int | None:
    """Run this build's ``homewatt-agent provision --config <config> <extra>``: the
    subcommand registered (like every command in its own module) with a ``handler``.
    None when there is no such command."""
    if parser is None:
        from edge_agent.cli import build_parser

        parser = build_parser
    built = parser()
    commands = next((a for a in built._actions
                     if isinstance(a, argparse._SubParsersAction)), None)
    if commands is None or "provision" not in commands.choices:
        return None
    try:
        args = built.parse_args(["provision", "--config", str(config), *extra])
    except SystemExit as exc:  # argparse printed what is missing after --
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    handler = getattr(args, "handler", None)
    if handler is None:
        return None
    return int(handler(args))


def _say(text: str) -> None:
    print(text, flush=True)


def setup(options: SetupOptions, *, ask: Ask, provision: ProvisionStep = cli_provision) -> int:
    """The three steps; see the module docstring. Returns the exit code."""
    _say("\n== step 1/3: scan " + ("(skipped) ==" if options.bus is None else "=="))
    if options.bus is not None:
        stop = _scan_step(options, ask)
    elif options.gateway_id is not None:
        stop = _write_gateway_id(options, ask)
    else:
        stop = None
    if stop is not None:
        return stop
    _say("\n== step 2/3: provision ==")
    if (stop := _provision_step(options, provision)) is not None:
        return stop
    _say("\n== step 3/3: doctor ==")
    return _doctor_step(options)


def _provision_step(options: SetupOptions, provision: ProvisionStep) -> int | None:
    if options.skip_provision:
        _say("skipped (--skip-provision)")
        return None
    code = provision(options.config, options.provision_args)
    if code is None:
        _say("this build has no `homewatt-agent provision`: set mqtt.url, ca_file, "
             "cert_file and key_file in the config by hand, then run doctor")
    elif code != 0:
        _say(f"provisioning failed (exit {code}): fix what it said and run setup again "
             "with --skip-scan")
        return EXIT_FAILED
    else:
        share_with_service_user(options.config, options.user, _say)
    return None


def _doctor_step(options: SetupOptions) -> int:
    failed = 0
    for check in run_checks(options.config, options.user, timeout_s=options.timeout_s):
        _say(format_check(check))
        failed += check.status is Status.FAIL
    if failed:
        _say(f"\n{failed} check(s) failed: fix them (see docs/installer.md) and run "
             "`homewatt-agent doctor` again")
        return EXIT_FAILED
    _say("\nall checks passed: start the agent with `sudo systemctl enable --now "
         "homewatt-agent` (or `sudo systemctl restart homewatt-agent`)")
    return EXIT_OK


def _scan_step(options: SetupOptions, ask: Ask) -> int | None:
    """Scan and write the config; an exit code to stop with, or None to go on."""
    bus = options.bus
    assert bus is not None
    try:
        found = asyncio.run(_scan(bus, options.units))
    except BusConnectError as exc:
        _say(f"scan: {exc}: fix the bus (see `homewatt-agent doctor`) and run setup again")
        return EXIT_FAILED
    usable = [f for f in found if f.usable]
    if not usable:
        _say("no usable meter found: check wiring (A/B), baudrate, parity and termination")
        return EXIT_FAILED
    snippet = render_snippet(bus, found, f"{bus.name}, units {format_units(options.units)}")
    current = options.config.read_text() if options.config.exists() else TEMPLATE
    text = replace_bus(current, bus.name, snippet)
    if options.gateway_id is not None:
        text = set_gateway_id(text, options.gateway_id)
    return _write(options.config, text, ask, f"write {len(usable)} meter(s) on bus "
                  f"{bus.name} into {options.config}?")


async def _scan(bus: BusSettings, units: list[int]) -> list[Found]:
    from edge_agent.modbus_bus import PymodbusBus

    real = PymodbusBus(bus)
    try:
        return await scan_bus(real, units, ProgressReport(sys.stdout, len(units)))
    finally:
        await real.close()


def _write_gateway_id(options: SetupOptions, ask: Ask) -> int | None:
    assert options.gateway_id is not None
    current = options.config.read_text() if options.config.exists() else TEMPLATE
    return _write(options.config, set_gateway_id(current, options.gateway_id), ask,
                  f"set gateway_id {options.gateway_id} in {options.config}?")


def _write(path: Path, text: str, ask: Ask, question: str) -> int | None:
    """Validate, confirm, back up, then replace ``path`` atomically keeping its owner/mode."""
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / path.name
        trial.write_text(text)
        try:
            load_config(trial)
        except ConfigError as exc:
            _say(f"the new config would not load ({exc}); nothing written")
            return EXIT_FAILED
    if not ask(question):
        _say("nothing written")
        return EXIT_USAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.stat() if path.exists() else None
    if old is not None:
        path.with_name(path.name + ".bak").write_bytes(path.read_bytes())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        os.chmod(tmp, old.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, old.st_uid, old.st_gid)
    os.replace(tmp, path)
    _say(f"wrote {path}" + (f" (previous version: {path.name}.bak)" if old else ""))
    return None


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    setup_parser = commands.add_parser(
        "setup", help="walk through scan -> provision -> doctor",
        description="Set up a gateway: scan the bus for meters and write them into the "
                    "config, provision the gateway (homewatt-agent provision, with any "
                    "arguments after --), then run doctor. Exit 0 when every check passed, "
                    "1 when one failed, 2 on bad arguments or when a question was declined.")
    setup_parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                              help="agent config to write (default %(default)s)")
    where = setup_parser.add_mutually_exclusive_group()
    where.add_argument("--serial", metavar="DEVICE", help="RS485 adapter to scan")
    where.add_argument("--host", help="Modbus TCP device or gateway to scan")
    where.add_argument("--skip-scan", action="store_true", help="keep the configured meters")
    setup_parser.add_argument("--port", type=int, default=502)
    setup_parser.add_argument("--rtu-over-tcp", action="store_true")
    setup_parser.add_argument("--baudrate", type=int, default=9600)
    setup_parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    setup_parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    setup_parser.add_argument("--units", default="1-247", help="unit ids to probe")
    setup_parser.add_argument("--timeout", type=float, default=0.3,
                              help="seconds each unit id gets to answer")
    setup_parser.add_argument("--bus-name", default="main")
    setup_parser.add_argument("--gateway-id", help="set gateway_id (the thing name)")
    setup_parser.add_argument("--skip-provision", action="store_true")
    setup_parser.add_argument("--user", help="check permissions as this user (see doctor)")
    setup_parser.add_argument("--yes", action="store_true",
                              help="answer yes to every question (for scripts)")
    setup_parser.add_argument("provision_args", nargs=argparse.REMAINDER,
                              help="-- then arguments for homewatt-agent provision")
    setup_parser.set_defaults(handler=run)


def _asker(assume_yes: bool) -> Ask | None:
    if assume_yes:
        return lambda _question: True
    if not sys.stdin.isatty():
        return None

    def ask(question: str) -> bool:
        answer = input(f"{question} [Y/n] ").strip().lower()
        return answer in ("", "y", "yes")

    return ask


def run(args: argparse.Namespace) -> int:
    ask = _asker(args.yes)
    if ask is None:
        print("setup: not a terminal: add --yes to answer its questions", file=sys.stderr)
        return EXIT_USAGE
    if not (args.serial or args.host or args.skip_scan):
        print("setup: say which bus to scan (--serial DEVICE or --host HOST), or --skip-scan",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        bus = None if args.skip_scan else bus_settings(args)
        units = parse_units(args.units)
        user = service_user(args.user)
    except ValidationError as exc:
        print(f"setup: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, KeyError) as exc:
        print(f"setup: {exc}", file=sys.stderr)
        return EXIT_USAGE
    extra = [a for a in args.provision_args if a != "--"]
    options = SetupOptions(args.config, bus, units, args.gateway_id, extra,
                           args.skip_provision, user)
    return setup(options, ask=ask)
