"""``homewatt-agent``: the gateway's command line.

Exit codes: 0 success, 1 a meter failed (``read``), the agent stopped with an error (``run``) or
provisioning failed (``provision``), 2 bad configuration (``config error: <key>: <message>`` on
stderr) or bad input.

Commands that live in their own module register with ``add_parser(commands)`` and set
``handler`` (``parser.set_defaults(handler=run)``): ``main`` calls it with the parsed
arguments and returns its exit code (``provision`` and the installer tools ``scan``,
``doctor``, ``setup``; ``setup`` runs ``provision`` through the same handler).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.clock import SystemClock
from edge_agent.config import AgentConfig, load_config
from edge_agent.errors import ConfigError
from edge_agent.logs import configure_logging
from edge_agent.ports import ModbusBus
from edge_agent.provision_cli import add_provision_parser, provision_command
from observability.tracing import configure_tracing, shutdown_tracing
from protocols.models import Quality, Reading

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def build_buses(config: AgentConfig) -> Mapping[str, ModbusBus]:
    """The real buses (a seam: tests replace it with fakes)."""
    from edge_agent.modbus_bus import build_buses as build_pymodbus_buses

    return build_pymodbus_buses(config.buses)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homewatt-agent",
        description="homewatt edge agent: reads meters and syncs them with the cloud.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    read = commands.add_parser(
        "read",
        help="read every configured meter once and print a table (wiring check)",
        description="Read every configured Modbus meter once and print each channel's value, "
                    "unit and quality. A meter that does not answer shows its error. Exit "
                    "status 0 when every meter answered, 1 when any failed, 2 on a bad config.",
    )
    read.add_argument("--config", type=Path, required=True, help="agent config file (TOML)")
    run = commands.add_parser(
        "run",
        help="run the agent (poll meters, buffer, sync with the cloud) until stopped",
        description="Run the agent in the foreground until SIGTERM/SIGINT; systemd runs this.",
    )
    run.add_argument("--config", type=Path, required=True, help="agent config file (TOML)")
    add_provision_parser(commands)
    commands.choices["provision"].set_defaults(handler=provision_command)
    from edge_agent import doctor_cli, scan_cli, setup_cli

    for module in (scan_cli, doctor_cli, setup_cli):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.command)
    handler = getattr(args, "handler", None)
    if handler is not None:  # provision writes the config the other commands read
        return int(handler(args))
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "read":
        return asyncio.run(read_command(config))
    return run_command(config, verbose=args.verbose)


def _setup_logging(verbose: bool, command: str) -> None:
    # `read` and `provision` print for people: only warnings would disturb them. `run` logs.
    # `run` installs its own (JSON, redacting) handler once the config names the format.
    if command != "run":
        level = logging.DEBUG if verbose else logging.WARNING
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # pymodbus logs every timeout as an error; our own BusError says the same once.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def run_command(config: AgentConfig, *, verbose: bool = False) -> int:
    try:
        runtime = importlib.import_module("edge_agent.runtime")
    except ImportError as exc:
        print(f"error: the agent runtime (edge_agent.runtime) cannot be loaded: {exc}",
              file=sys.stderr)
        return EXIT_FAILED
    # The service logs in the configured format (JSON by default) and traces if configured.
    if not logging.getLogger().handlers:  # like basicConfig: a host's own set-up wins
        configure_logging(logging.DEBUG if verbose else logging.INFO, config.log_format)
    configure_tracing(config.tracing_exporter, endpoint=config.tracing_otlp_endpoint,
                      service_name="homewatt-agent")
    try:
        result = runtime.run(config)
    finally:
        shutdown_tracing()
    return int(result)


@dataclass(frozen=True)
class MeterResult:
    meter_id: str
    readings: list[Reading]
    error: str | None  # None: read fine; otherwise why the meter has no values
    note: str | None = None  # meters `read` cannot read (S0)


async def read_all(config: AgentConfig, buses: Mapping[str, ModbusBus]) -> list[MeterResult]:
    """Read every configured meter once, concurrently (meters on one bus take turns)."""
    from edge_agent.meter_reader import MeterReader, build_readers

    async def one(reader: MeterReader) -> MeterResult:
        readings = await reader.read()
        return MeterResult(reader.meter_id, readings, reader.last_error)

    readers = build_readers(config, buses, SystemClock())
    results = {r.meter_id: r for r in await asyncio.gather(*(one(r) for r in readers))}
    ordered = []
    for meter in config.meters:
        if meter.id in results:
            ordered.append(results[meter.id])
        else:
            note = f"S0 pulse input on pin {meter.s0.pin if meter.s0 else '?'}: counted by `run`"
            ordered.append(MeterResult(meter.id, [], None, note))
    return ordered


def format_table(results: Sequence[MeterResult]) -> str:
    rows = [("METER", "CHANNEL", "VALUE", "UNIT", "QUALITY")]
    for result in results:
        if result.error is not None:
            rows.append((result.meter_id, "-", "-", "-", f"error: {result.error}"))
        elif result.note is not None:
            rows.append((result.meter_id, "-", "-", "-", result.note))
        for reading in result.readings:
            if reading.quality is Quality.ERROR:
                continue
            value = "-" if reading.value is None else f"{reading.value:.3f}"
            rows.append((result.meter_id, reading.channel, value, reading.unit.value,
                         reading.quality.value))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                 row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


async def read_command(config: AgentConfig) -> int:
    buses = build_buses(config)
    try:
        results = await read_all(config, buses)
    finally:
        for bus in buses.values():
            await bus.close()
    print(format_table(results))
    failed = [r.meter_id for r in results if r.error is not None]
    read = [r for r in results if r.note is None]
    print(f"\n{len(read) - len(failed)} of {len(read)} Modbus meters answered"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
