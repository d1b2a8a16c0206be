"""``homewatt-agent scan`` on the command line: arguments, progress, the snippet.

Found devices are reported on stderr as they turn up, with a progress bar on a terminal and
a line every tenth of the way otherwise; the ready agent.toml snippet goes to stdout (and
``--out``). Exit 0 when a usable device was found, 1 when none was or the bus cannot be
opened, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from edge_agent.config import BusSettings
from edge_agent.errors import BusConnectError
from edge_agent.scan import scan_bus
from edge_agent.scan_snippet import Found, format_units, parse_units, render_snippet

__all__ = ["ProgressReport", "add_parser", "bus_settings", "run"]

EXIT_OK, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2


class ProgressReport:
    """A bar redrawn in place on a terminal; otherwise a line each tenth of the way."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._step = max(1, total // 10)
        self._count = 0

    def __call__(self, done: int, total: int, found: Found | None) -> None:
        if found is not None:
            self._count += 1
            self._clear()
            print(f"  unit {found.unit}: {found.description}", file=self._stream)
        if self._tty:
            filled = round(30 * done / total)
            self._stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} "
                               f"unit ids, {self._count} found")
            if done == total:
                self._stream.write("\n")
        elif done % self._step == 0 or done == total:
            print(f"scanned {done}/{total} unit ids, {self._count} found", file=self._stream)
        self._stream.flush()

    def _clear(self) -> None:
        if self._tty:
            self._stream.write("\r" + " " * 70 + "\r")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scan = commands.add_parser(
        "scan", help="find and identify Modbus meters on a bus, print a config snippet",
        description="Probe Modbus unit ids on one bus (one request each, --timeout to answer), "
                    "identify Eastron SDM630/SDM72/SDM120 meters and SunSpec inverters and "
                    "meters, and print a ready agent.toml snippet on stdout. Exit 0 when a "
                    "usable device was found, 1 when none was, 2 on bad arguments. Stop the "
                    "agent first on a serial bus: one port, one master.")
    where = scan.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", metavar="DEVICE", help="RS485 adapter, e.g. /dev/ttyUSB0")
    where.add_argument("--host", help="Modbus TCP device or gateway address")
    scan.add_argument("--port", type=int, default=502, help="TCP port (default %(default)s)")
    scan.add_argument("--rtu-over-tcp", action="store_true",
                      help="RTU frames through a TCP gateway (with --host)")
    scan.add_argument("--baudrate", type=int, default=9600, help="serial speed (default 9600)")
    scan.add_argument("--parity", choices=["N", "E", "O"], default="N")
    scan.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    scan.add_argument("--units", default="1-247", type=_units,
                      help="unit ids to probe, e.g. 1-10,126,240 (default %(default)s)")
    scan.add_argument("--timeout", type=float, default=0.3,
                      help="seconds each unit id gets to answer (default %(default)s)")
    scan.add_argument("--bus-name", default="main", help="name of the bus in the snippet")
    scan.add_argument("--out", type=Path, help="also write the snippet to this file")
    scan.set_defaults(handler=run)


def _units(text: str) -> list[int]:
    try:
        return parse_units(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bus_settings(args: argparse.Namespace) -> BusSettings:
    """The bus the arguments describe (raises ``ValueError`` naming the bad one)."""
    if not 0 < args.timeout <= 30:
        raise ValueError("--timeout must be between 0 and 30 seconds")
    if args.serial:
        return BusSettings(name=args.bus_name, kind="rtu", serial_port=args.serial,
                           baudrate=args.baudrate, parity=args.parity, stopbits=args.stopbits,
                           timeout_s=args.timeout)
    kind = "rtu_over_tcp" if args.rtu_over_tcp else "tcp"
    return BusSettings(name=args.bus_name, kind=kind, host=args.host, port=args.port,
                       timeout_s=args.timeout)


def run(args: argparse.Namespace) -> int:
    try:
        settings = bus_settings(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"scan: {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_scan(settings, args.units, args.out))


async def _scan(settings: BusSettings, units: list[int], out: Path | None) -> int:
    from edge_agent.modbus_bus import PymodbusBus

    where = (settings.serial_port if settings.kind == "rtu"
             else f"{settings.kind} {settings.host}:{settings.port}")
    bound = len(units) * settings.timeout_s
    print(f"scanning {where}: {len(units)} unit ids, at most ~{bound:.0f} s for silent ones",
          file=sys.stderr)
    bus = PymodbusBus(settings)
    started = time.monotonic()
    try:
        found = await scan_bus(bus, units, ProgressReport(sys.stderr, len(units)))
    except BusConnectError as exc:
        fix = ("check the adapter is plugged in, the device name, and that this user may "
               "open it (group dialout); stop the agent if it holds the port"
               if settings.kind == "rtu" else
               "check the address and port, and that the device or gateway is powered and "
               "reachable (ping it)")
        print(f"scan: {exc}: {fix}", file=sys.stderr)
        return EXIT_NOTHING
    finally:
        await bus.close()
    snippet = render_snippet(settings, found, f"{where}, units {format_units(units)}")
    print(snippet, end="")
    if out is not None:
        await asyncio.to_thread(out.write_text, snippet)
    usable = [f for f in found if f.usable]
    print(f"done in {time.monotonic() - started:.1f} s: {len(usable)} usable device(s)"
          + ("" if usable else "; check wiring (A/B), baud rate, parity and termination"),
          file=sys.stderr)
    return EXIT_OK if usable else EXIT_NOTHING

