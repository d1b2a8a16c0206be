"""``homewatt-agent doctor`` on the command line: run every check, print the checklist.

Each line is ``PASS|WARN|FAIL|SKIP  <check>  <what was found>``, and every failure or warning
is followed by ``fix: <what to do>``. Lines are printed as checks finish (meters and the
broker take up to their timeouts). ``--json`` prints one JSON document instead. Exit 0 when
nothing failed, 1 when a check failed, 2 when the config cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from edge_agent.clock_sync import LinuxClockSync
from edge_agent.config import AgentConfig
from edge_agent.doctor import (
    Check,
    ServiceUser,
    Status,
    check_clock,
    check_config,
    check_disk,
    check_serial_ports,
    check_tls,
)
from edge_agent.doctor_net import check_broker, run_meters

__all__ = ["add_parser", "format_check", "run", "run_checks", "service_user"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DEFAULT_CONFIG = Path("/etc/homewatt/agent.toml")
PACKAGED_USER = "homewatt"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor", help="check config, serial ports, meters, broker, TLS, clock and disk",
        description="Check everything the agent needs and print a pass/fail checklist with "
                    "the fix for each failure: config validity, serial port access for the "
                    "service user, each meter's answer, the broker (a real MQTT session), TLS "
                    "files and certificate expiry, clock sync, and disk space for the buffer. "
                    "Exit 0 when nothing failed, 1 when something did, 2 when the config "
                    "cannot be loaded.")
    doctor.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="agent config file (default %(default)s)")
    doctor.add_argument("--user", help="check permissions as this user (default: homewatt "
                                       "when run as root and it exists, else yourself)")
    doctor.add_argument("--timeout", type=float, default=5.0,
                        help="seconds for the broker to answer (default %(default)s)")
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")
    doctor.set_defaults(handler=run)


def service_user(name: str | None) -> ServiceUser:
    """``--user``, else the packaged service user when root runs doctor, else the caller.
    Raises ``KeyError`` for an unknown ``name``."""
    if name is not None:
        return ServiceUser.named(name)
    if os.geteuid() == 0:
        try:
            return ServiceUser.named(PACKAGED_USER)
        except KeyError:
            pass
    return ServiceUser.current()


def run_checks(config_path: Path, user: ServiceUser, *, timeout_s: float = 5.0
               ) -> Iterator[Check]:
    """Every check, in checklist order; stops after the config check when it fails."""
    check, config = check_config(config_path)
    yield check
    if config is None:
        return
    yield from _after_config(config, user, timeout_s)


def _after_config(config: AgentConfig, user: ServiceUser, timeout_s: float
                  ) -> Iterator[Check]:
    steps: list[Callable[[], list[Check]]] = [
        lambda: check_serial_ports(config, user),
        lambda: run_meters(config),
        lambda: check_tls(config, user=user),
        lambda: [check_broker(config, timeout_s)],
        lambda: [check_clock(LinuxClockSync(flag_file=config.clock.timesync_flag))],
        lambda: [check_disk(config, user)],
    ]
    for step in steps:
        yield from step()


def format_check(check: Check) -> str:
    line = f"{check.status.value:<5} {check.name:<22} {check.detail}"
    if check.fix and check.status in (Status.FAIL, Status.WARN):
        line += f"\n{'':<6}fix: {check.fix}"
    return line


def run(args: argparse.Namespace) -> int:
    try:
        user = service_user(args.user)
    except KeyError:
        print(f"doctor: --user {args.user}: no such user", file=sys.stderr)
        return EXIT_CONFIG
    if not args.json:
        print(f"homewatt-agent doctor: {args.config} (permissions checked for user "
              f"{user.name})", flush=True)
    checks = []
    for check in run_checks(args.config, user, timeout_s=args.timeout):
        checks.append(check)
        if not args.json:
            print(format_check(check), flush=True)
    counts = {status: sum(1 for c in checks if c.status is status) for status in Status}
    if args.json:
        print(json.dumps({"config": str(args.config), "user": user.name,
                          "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        print(f"\n{counts[Status.PASS]} passed, {counts[Status.WARN]} warnings, "
              f"{counts[Status.FAIL]} failed, {counts[Status.SKIP]} skipped")
    if checks[0].status is Status.FAIL:
        return EXIT_CONFIG
    return EXIT_FAILED if counts[Status.FAIL] else EXIT_OK
