"""Backup, restore and restore-verification of the cloud database.

A backup is a directory holding one dump file (``cloud.sqlite`` or ``cloud.pgdump``) and
``manifest.json`` (written last: a directory without it is an incomplete backup). The manifest
records each table's row count and engine-independent checksum at the dump's snapshot, and
the dump file's size and sha256; restore refuses a dump whose sha256 differs, and both restore
and ``verify_backup`` recompute the tables' digests afterwards and compare them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from cloud_sync.backup_engines import DumpTool, PgDumpTool, dump_tool, parse_url
from cloud_sync.backup_manifest import (
    MANIFEST_NAME,
    BackupError,
    BackupInputError,
    DumpFile,
    Manifest,
    TableCheck,
    compare,
    redact_url,
)

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
_FORMATS = {"sqlite": "sqlite-online-backup", "postgresql": "pg_dump-custom"}


def _quiet(_line: str) -> None:
    """Default progress sink: say nothing."""


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of a restore: per-table checks, the revision, and how long it took."""

    checks: list[TableCheck]
    expected_revision: str | None
    actual_revision: str | None
    restore_s: float
    verify_s: float

    @property
    def ok(self) -> bool:
        return (self.expected_revision == self.actual_revision
                and all(c.ok for c in self.checks))


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _prepare_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".probe-"):
            pass
    except OSError as exc:
        raise BackupError(f"cannot write to {out_dir}: {exc.strerror or exc}") from exc
    if (out_dir / MANIFEST_NAME).exists():
        raise BackupError(f"{out_dir} already holds a backup: choose an empty directory")


def create_backup(url: str, out_dir: Path, progress: Progress = _quiet,
                  tool: DumpTool | None = None) -> Manifest:
    """Dump ``url`` into ``out_dir`` and write its manifest; consistent while it is written to.

    Raises :class:`BackupInputError` for a bad URL, :class:`BackupError` for an unwritable
    directory, a missing database or a failed dump tool; database errors pass through.
    """
    tool = tool or dump_tool(url)
    _prepare_out_dir(out_dir)
    dump_path = out_dir / tool.dump_name
    partial = out_dir / f".{tool.dump_name}.partial"
    progress(f"dumping {redact_url(url)} ({tool.engine}) to {dump_path}")
    started = time.perf_counter()
    try:
        digests, revision = tool.dump(partial)
        partial.replace(dump_path)
    finally:
        partial.unlink(missing_ok=True)
    total = sum(d.rows for d in digests.values())
    progress(f"dumped {len(digests)} tables, {total} rows in "
             f"{time.perf_counter() - started:.2f}s; hashing {dump_path.name}")
    manifest = Manifest(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        source=redact_url(url), engine=tool.engine, alembic_revision=revision, tables=digests,
        dump=DumpFile(dump_path.name, dump_path.stat().st_size, file_sha256(dump_path)),
        tool={"format": _FORMATS[tool.engine]})
    tmp = out_dir / f".{MANIFEST_NAME}.partial"
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST_NAME)
    progress(f"wrote {out_dir / MANIFEST_NAME} (revision {revision}, "
             f"{manifest.dump.size} bytes, sha256 {manifest.dump.sha256[:12]}...)")
    return manifest


def load_backup(backup_dir: Path, progress: Progress = _quiet) -> tuple[Manifest, Path]:
    """Read the manifest and check the dump file against it (size and sha256).

    Raises :class:`BackupInputError` when ``backup_dir`` holds no backup and
    :class:`BackupError` when the dump is missing or corrupt.
    """
    manifest_path = backup_dir / MANIFEST_NAME
    try:
        manifest = Manifest.from_json(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BackupInputError(f"{backup_dir} holds no backup ({MANIFEST_NAME} missing)") \
            from exc
    dump = backup_dir / Path(manifest.dump.name).name
    if not dump.is_file():
        raise BackupError(f"backup is incomplete: {dump} is missing")
    progress(f"checking {dump.name} against the manifest")
    actual = file_sha256(dump)
    if actual != manifest.dump.sha256 or dump.stat().st_size != manifest.dump.size:
        raise BackupError(f"backup is corrupt: {dump} has sha256 {actual[:16]}..., the "
                          f"manifest says {manifest.dump.sha256[:16]}...; do not restore it")
    return manifest, dump


def _restore_and_check(manifest: Manifest, dump: Path, tool: DumpTool,
                       progress: Progress) -> VerifyReport:
    progress(f"restoring {dump.name} ({manifest.dump.size} bytes)")
    started = time.perf_counter()
    tool.restore(dump)
    restore_s = time.perf_counter() - started
    progress(f"restored in {restore_s:.2f}s; recomputing row counts and checksums")
    started = time.perf_counter()
    digests, revision = tool.snapshot()
    verify_s = time.perf_counter() - started
    return VerifyReport(compare(manifest.tables, digests), manifest.alembic_revision, revision,
                        restore_s, verify_s)


def restore_backup(backup_dir: Path, target_url: str, *, force: bool = False,
                   progress: Progress = _quiet, tool: DumpTool | None = None) -> VerifyReport:
    """Restore ``backup_dir`` into ``target_url``, then verify it against the manifest.

    Refuses a corrupt dump, and a target holding data unless ``force`` (its tables are
    replaced). Stop ``serve`` first: writes during a restore are lost or block it.
    """
    manifest, dump = load_backup(backup_dir, progress)
    tool = tool or dump_tool(target_url)
    if tool.engine != manifest.engine:
        raise BackupInputError(f"a {manifest.engine} backup cannot be restored into "
                               f"{tool.engine} ({redact_url(target_url)})")
    if not force and tool.has_data():
        raise BackupError(f"{redact_url(target_url)} already holds data: pass --force to "
                          "replace it")
    return _restore_and_check(manifest, dump, tool, progress)


def verify_backup(backup_dir: Path, server_url: str | None = None,
                  progress: Progress = _quiet) -> VerifyReport:
    """Restore into a scratch database, compare with the manifest, drop the scratch copy.

    SQLite uses a temporary file; PostgreSQL a temporary database created (and dropped) on
    the server of ``server_url``, whose user needs CREATEDB. ``restore_s`` is the measured RTO
    of this backup on this machine.
    """
    manifest, dump = load_backup(backup_dir, progress)
    if manifest.engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="homewatt-verify-") as scratch:
            url = f"sqlite:///{Path(scratch) / 'scratch.sqlite'}"
            return _restore_and_check(manifest, dump, dump_tool(url), progress)
    if server_url is None or parse_url(server_url).get_backend_name() != "postgresql":
        raise BackupInputError("verifying a PostgreSQL backup needs a PostgreSQL server: set "
                               "HOMEWATT_DB_URL or pass --server postgresql+psycopg://...")
    with scratch_database(server_url, progress) as url:
        return _restore_and_check(manifest, dump, PgDumpTool(url), progress)


@contextmanager
def scratch_database(server_url: str, progress: Progress = _quiet) -> Iterator[str]:
    """Create an empty database on ``server_url``'s server; yield its URL; drop it."""
    parsed = parse_url(server_url)
    name = f"homewatt_verify_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    try:
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except sa.exc.ProgrammingError as exc:
            raise BackupError(f"cannot create a scratch database on {redact_url(server_url)} "
                              f"(its user needs CREATEDB): {exc.orig}") from exc
        progress(f"created scratch database {name}")
        try:
            yield parsed.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            progress(f"dropped scratch database {name}")
    finally:
        admin.dispose()
