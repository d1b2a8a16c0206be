"""``homewatt-cloud backup | restore | verify-backup``: parsers and handlers.

Exit codes follow the CLI: 0 ok, 1 the backup/restore/verification failed or the database
is unavailable, 2 bad input (malformed URL, a directory that holds no backup, engines differ).
Progress goes to stdout, errors to stderr as one line each, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cloud_sync.backup import VerifyReport, create_backup, restore_backup, verify_backup
from cloud_sync.backup_manifest import BackupInputError, redact_url
from cloud_sync.settings import CloudSettings

COMMANDS = ("backup", "restore", "verify-backup")


def add_backup_parsers(sub: Any) -> None:
    """Register the three subcommands on ``sub`` (the CLI's ``add_subparsers`` object)."""
    backup = sub.add_parser("backup", help="dump the database (HOMEWATT_DB_URL) with a "
                            "checksummed manifest; safe while serve is running")
    backup.add_argument("--out", required=True, type=Path,
                        help="an empty (or new) directory for the dump and manifest.json")
    restore = sub.add_parser("restore", help="restore a backup (stop serve first), then "
                             "verify row counts and checksums")
    restore.add_argument("--from", dest="source", required=True, type=Path,
                         help="a directory written by backup")
    restore.add_argument("--to", dest="target", default=None,
                         help="database URL to restore into (default HOMEWATT_DB_URL)")
    restore.add_argument("--force", action="store_true",
                         help="replace a target that already holds data")
    verify = sub.add_parser("verify-backup", help="restore into a scratch database, compare "
                            "with the manifest and report the restore time (RTO)")
    verify.add_argument("--from", dest="source", required=True, type=Path,
                        help="a directory written by backup")
    verify.add_argument("--server", default=None,
                        help="PostgreSQL URL whose server hosts the scratch database "
                        "(default HOMEWATT_DB_URL; the user needs CREATEDB)")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _report(report: VerifyReport, what: str) -> int:
    for check in report.checks:
        _say(check.describe())
    if report.expected_revision != report.actual_revision:
        _say(f"FAIL alembic revision: manifest {report.expected_revision}, "
             f"restored {report.actual_revision}")
    rows = sum(c.actual.rows for c in report.checks if c.actual)
    _say(f"{what} {'PASSED' if report.ok else 'FAILED'}: {len(report.checks)} tables, "
         f"{rows} rows; restore {report.restore_s:.2f}s (RTO), "
         f"verify {report.verify_s:.2f}s")
    return 0 if report.ok else 1


def run_backup_command(settings: CloudSettings, args: argparse.Namespace) -> int:
    """Dispatch one of :data:`COMMANDS`; ``BackupError``/database errors propagate to the
    CLI's handlers (exit 1) except bad input, which exits 2 here."""
    try:
        if args.command == "backup":
            create_backup(settings.effective_db_url, args.out, _say)
            return 0
        if args.command == "restore":
            target = args.target or settings.effective_db_url
            _say(f"restoring {args.source} into {redact_url(target)}")
            return _report(restore_backup(args.source, target, force=args.force,
                                          progress=_say), "restore")
        server = args.server or settings.db_url
        return _report(verify_backup(args.source, server, _say), "verify-backup")
    except BackupInputError as exc:
        sys.stderr.write(f"homewatt-cloud: {exc}\n")
        return 2
