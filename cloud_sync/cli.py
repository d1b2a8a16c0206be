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

from pydantic import ValidationError

from cloud_sync.bootstrap import build_service, build_store, load_settings
from cloud_sync.db import migrate
from cloud_sync.db.commands_store import SqlCommandStore
from cloud_sync.db.store import DB_ERRORS, now_ms
from cloud_sync.errors import CloudSyncError, NotFound
from cloud_sync.settings import CloudSettings
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
    admin = sub.add_parser("admin", help="registry administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    add = admin_sub.add_parser("add-gateway", help="register a gateway so its telemetry is stored")
    add.add_argument("gateway_id")
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    dev = admin_sub.add_parser("add-device", help="register a device so it accepts commands")
    dev.add_argument("gateway_id")
    dev.add_argument("device_id")
    dev.add_argument("--capabilities", required=True,
                     help="comma-separated actions: " + ", ".join(a.value for a in Action))
    dev.add_argument("--kind", default="device", help="free-form kind (relay, heatpump, evse)")
    dev.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _settings() -> CloudSettings | None:
    try:
        return load_settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "HOMEWATT_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"homewatt-cloud: {name}: {error['msg']}", file=sys.stderr)
        return None


def _serve(settings: CloudSettings, host: str, port: int) -> int:
    import uvicorn

    service = build_service(settings)
    service.start()
    try:
        uvicorn.run(service.app, host=host, port=port, log_level="warning")
    finally:
        service.stop()
    return 0


def _add_gateway(settings: CloudSettings, gateway_id: str, as_json: bool) -> int:
    if not re.match(GATEWAY_ID_PATTERN, gateway_id):
        print(f"homewatt-cloud: gateway id {gateway_id!r} must match {GATEWAY_ID_PATTERN}",
              file=sys.stderr)
        return 2
    store = build_store(settings)
    try:
        migrate.upgrade(store.engine)
        created = store.add_gateway(gateway_id)
    finally:
        store.engine.dispose()
    if as_json:
        print(json.dumps({"gateway_id": gateway_id, "created": created}))
    else:
        print(f"gateway {gateway_id} {'registered' if created else 'was already registered'}")
    return 0


def _add_device(settings: CloudSettings, args: argparse.Namespace) -> int:
    caps = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    known = {a.value for a in Action}
    problem = None
    if not re.match(METER_ID_PATTERN, args.device_id):
        problem = f"device id {args.device_id!r} must match {METER_ID_PATTERN}"
    elif not caps or set(caps) - known:
        bad = sorted(set(caps) - known) or ["(none given)"]
        problem = f"--capabilities: {', '.join(bad)} not an action (use {', '.join(sorted(known))})"
    if problem:
        print(f"homewatt-cloud: {problem}", file=sys.stderr)
        return 2
    store = build_store(settings)
    try:
        migrate.upgrade(store.engine)
        created = SqlCommandStore(store.engine, store.breaker).add_device(
            args.gateway_id, args.device_id, args.kind, caps, now_ms())
    except NotFound as exc:
        print(f"homewatt-cloud: {exc} (run: homewatt-cloud admin add-gateway "
              f"{args.gateway_id})", file=sys.stderr)
        return 2
    finally:
        store.engine.dispose()
    if args.json:
        print(json.dumps({"device_id": args.device_id, "gateway_id": args.gateway_id,
                          "capabilities": caps, "created": created}))
    else:
        print(f"device {args.device_id} {'registered' if created else 'updated'} on "
              f"{args.gateway_id}: {', '.join(caps)}")
    return 0


def _admin(settings: CloudSettings, args: argparse.Namespace) -> int:
    if args.admin_command == "add-device":
        return _add_device(settings, args)
    return _add_gateway(settings, args.gateway_id, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings()
    if settings is None:
        return 2
    try:
        if args.command == "serve":
            return _serve(settings, args.host, args.port)
        if args.command == "migrate":
            store = build_store(settings)
            migrate.upgrade(store.engine)
            print(f"schema is at head: {store.engine.url.render_as_string()}")
            return 0
        return _admin(settings, args)
    except CloudSyncError as exc:
        print(f"homewatt-cloud: {exc}", file=sys.stderr)
        return 1
    except DB_ERRORS as exc:
        print(f"homewatt-cloud: database unavailable: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
