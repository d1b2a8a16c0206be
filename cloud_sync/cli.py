"""``homewatt-cloud``: serve the API + ingestion, run migrations, administer the registry.

Exit codes: 0 ok, 1 a service (database) is unavailable, 2 bad input or settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from cloud_sync.backup_cli import COMMANDS as BACKUP_COMMANDS
from cloud_sync.backup_cli import add_backup_parsers, run_backup_command
from cloud_sync.bootstrap import build_service, build_store, load_settings
from cloud_sync.broker_cli import COMMANDS as BROKER_COMMANDS
from cloud_sync.broker_cli import add_broker_parsers, run_broker_command
from cloud_sync.db import migrate
from cloud_sync.db.commands_store import SqlCommandStore
from cloud_sync.db.store import DB_ERRORS, now_ms
from cloud_sync.errors import CloudSyncError, NotFound, SettingsError
from cloud_sync.logs import configure_logging
from cloud_sync.provisioning_cli import COMMANDS as PROVISIONING_COMMANDS
from cloud_sync.provisioning_cli import add_provisioning_admin_parsers, run_provisioning_admin
from cloud_sync.settings import CloudSettings
from observability.tracing import configure_tracing, shutdown_tracing
from protocols.commands import Action
from protocols.models import GATEWAY_ID_PATTERN, METER_ID_PATTERN

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homewatt-cloud",
        description="homewatt cloud service. Settings come from HOMEWATT_* environment "
        "variables (HOMEWATT_DB_URL, HOMEWATT_MQTT_URL, HOMEWATT_DATA_DIR, ...).")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the REST API and the MQTT ingestion worker")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    sub.add_parser("migrate", help="bring the database schema to the latest revision")
    add_backup_parsers(sub)
    add_broker_parsers(sub)
    admin = sub.add_parser("admin", help="registry administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    add = admin_sub.add_parser("add-gateway", help="register a gateway so its telemetry is stored")
    add.add_argument("gateway_id", nargs="*", help="one or more gateway ids")
    add.add_argument("--from-file", type=Path, metavar="FILE",
                     help="also register every id in FILE (one per line; # comments)")
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    dev = admin_sub.add_parser("add-device", help="register a device so it accepts commands")
    dev.add_argument("gateway_id", nargs="?")
    dev.add_argument("device_id", nargs="?")
    dev.add_argument("--from-file", type=Path, metavar="FILE",
                     help="instead of GATEWAY_ID DEVICE_ID: one 'gateway_id device_id' pair per "
                          "line, all with the same capabilities and kind")
    dev.add_argument("--capabilities", required=True,
                     help="comma-separated actions: " + ", ".join(a.value for a in Action))
    dev.add_argument("--kind", default="device", help="free-form kind (relay, heatpump, evse)")
    dev.add_argument("--json", action="store_true", help="print the result as JSON")
    add_provisioning_admin_parsers(admin_sub)
    return parser


def _settings() -> CloudSettings | None:
    try:
        return load_settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "HOMEWATT_" + "_".join(str(p) for p in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            # a check across settings names them in its message
            print(f"homewatt-cloud: {name + ': ' if error['loc'] else ''}{message}",
                  file=sys.stderr)
        return None


def _serve(settings: CloudSettings, host: str, port: int, log_level: str) -> int:
    import uvicorn

    # The service logs in the configured format (JSON by default) and traces if configured.
    if not logging.getLogger().handlers:  # like basicConfig: a host's own set-up wins
        configure_logging(log_level, settings.log_format)
    configure_tracing(settings.tracing_exporter, endpoint=settings.tracing_otlp_endpoint,
                      service_name="homewatt-cloud")
    service = build_service(settings)
    service.start()
    try:
        uvicorn.run(service.app, host=host, port=port, log_level="warning", log_config=None)
    finally:
        service.stop()
        shutdown_tracing()
    return 0


def _file_lines(path: Path | None) -> list[str]:
    """Non-blank, non-comment lines of an ``--from-file`` list (a fleet registers hundreds)."""
    if path is None:
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _add_gateways(settings: CloudSettings, args: argparse.Namespace) -> int:
    ids = [*args.gateway_id, *_file_lines(args.from_file)]
    bad = [g for g in ids if not re.match(GATEWAY_ID_PATTERN, g)]
    if not ids or bad:
        problem = f"gateway id {bad[0]!r} must match {GATEWAY_ID_PATTERN}" if bad else \
            "give a GATEWAY_ID or --from-file"
        print(f"homewatt-cloud: {problem}", file=sys.stderr)
        return 2
    store = build_store(settings)
    try:
        migrate.upgrade(store.engine)
        results = [(gateway_id, store.add_gateway(gateway_id)) for gateway_id in ids]
    finally:
        store.engine.dispose()
    for gateway_id, created in results:
        if args.json:
            print(json.dumps({"gateway_id": gateway_id, "created": created}))
        else:
            print(f"gateway {gateway_id} {'registered' if created else 'was already registered'}")
    return 0


def _device_pairs(args: argparse.Namespace) -> list[tuple[str, str]] | str:
    """(gateway, device) pairs from the positionals and ``--from-file``, or what is wrong."""
    pairs = [(args.gateway_id, args.device_id)] if args.device_id else []
    if args.gateway_id and not args.device_id:
        return "give GATEWAY_ID and DEVICE_ID"
    for line in _file_lines(args.from_file):
        parts = line.split()
        if len(parts) != 2:
            return f"--from-file: {line!r} is not 'gateway_id device_id'"
        pairs.append((parts[0], parts[1]))
    if not pairs:
        return "give GATEWAY_ID DEVICE_ID or --from-file"
    bad = [d for _g, d in pairs if not re.match(METER_ID_PATTERN, d)]
    return f"device id {bad[0]!r} must match {METER_ID_PATTERN}" if bad else pairs


def _add_device(settings: CloudSettings, args: argparse.Namespace) -> int:
    caps = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    known = {a.value for a in Action}
    pairs = _device_pairs(args)
    problem = pairs if isinstance(pairs, str) else None
    if problem is None and (not caps or set(caps) - known):
        bad = sorted(set(caps) - known) or ["(none given)"]
        problem = f"--capabilities: {', '.join(bad)} not an action (use {', '.join(sorted(known))})"
    if problem is not None or isinstance(pairs, str):
        print(f"homewatt-cloud: {problem}", file=sys.stderr)
        return 2
    store = build_store(settings)
    commands = SqlCommandStore(store.engine, store.breaker)
    results: list[tuple[str, str, bool]] = []
    try:
        migrate.upgrade(store.engine)
        for gateway_id, device_id in pairs:
            created = commands.add_device(gateway_id, device_id, args.kind, caps, now_ms())
            results.append((gateway_id, device_id, created))
    except NotFound as exc:
        print(f"homewatt-cloud: {exc} (run: homewatt-cloud admin add-gateway "
              f"{pairs[len(results)][0]})", file=sys.stderr)
        return 2
    finally:
        store.engine.dispose()
    for gateway_id, device_id, created in results:
        if args.json:
            print(json.dumps({"device_id": device_id, "gateway_id": gateway_id,
                              "capabilities": caps, "created": created}))
        else:
            print(f"device {device_id} {'registered' if created else 'updated'} on "
                  f"{gateway_id}: {', '.join(caps)}")
    return 0


def _admin(settings: CloudSettings, args: argparse.Namespace) -> int:
    if args.admin_command in PROVISIONING_COMMANDS:
        return run_provisioning_admin(settings, args)
    if args.admin_command == "add-device":
        return _add_device(settings, args)
    return _add_gateways(settings, args)


def _dispatch(settings: CloudSettings, args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(settings, args.host, args.port, args.log_level)
    if args.command == "migrate":
        store = build_store(settings)
        migrate.upgrade(store.engine)
        print(f"schema is at head: {store.engine.url.render_as_string()}")
        return 0
    if args.command in BROKER_COMMANDS:
        return run_broker_command(settings, args)
    handler = run_backup_command if args.command in BACKUP_COMMANDS else _admin
    return handler(settings, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings()
    if settings is None:
        return 2
    if args.command != "serve":
        logging.basicConfig(level=args.log_level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(settings, args)
    except SettingsError as exc:
        print(f"homewatt-cloud: {exc}", file=sys.stderr)
        return 2
    except CloudSyncError as exc:
        print(f"homewatt-cloud: {exc}", file=sys.stderr)
        return 1
    except DB_ERRORS as exc:
        print(f"homewatt-cloud: database unavailable: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
