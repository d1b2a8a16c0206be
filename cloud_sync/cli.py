"""``homewatt-cloud``: serve the API + ingestion, run migrations, administer the registry.

Exit codes: 0 ok, 1 a service (database) is unavailable, 2 bad input or settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from cloud_sync.admin_cli import add_admin_parser, run_admin_command
from cloud_sync.analytics_cli import COMMANDS as ANALYTICS_COMMANDS
from cloud_sync.analytics_cli import add_analytics_parsers, run_analytics_command
from cloud_sync.backup_cli import COMMANDS as BACKUP_COMMANDS
from cloud_sync.backup_cli import add_backup_parsers, run_backup_command
from cloud_sync.bootstrap import build_service, build_store, load_settings
from cloud_sync.broker_cli import COMMANDS as BROKER_COMMANDS
from cloud_sync.broker_cli import add_broker_parsers, run_broker_command
from cloud_sync.db import migrate
from cloud_sync.db.store import DB_ERRORS
from cloud_sync.errors import CloudSyncError, SettingsError
from cloud_sync.logs import configure_logging
from cloud_sync.settings import CloudSettings
from observability.tracing import configure_tracing, shutdown_tracing

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
    add_admin_parser(sub)
    add_analytics_parsers(sub)
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
    if args.command in ANALYTICS_COMMANDS:
        return run_analytics_command(settings, args)
    handler = run_backup_command if args.command in BACKUP_COMMANDS else run_admin_command
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
