"""Dump and restore adapters: SQLite through the online backup API, PostgreSQL through
``pg_dump --format=custom`` / ``pg_restore``.

Both take a consistent snapshot while the service keeps writing: SQLite copies the database
in one backup step under a WAL read snapshot (writers are not blocked); PostgreSQL exports a
REPEATABLE READ snapshot, hands it to ``pg_dump --snapshot`` and checksums the tables in that
same snapshot, so the manifest describes exactly what the dump holds. Passwords go to the
tools through ``PGPASSWORD``, never through argv.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from cloud_sync.backup_manifest import BackupError, BackupInputError, TableDigest, digest_rows
from cloud_sync.db.engine import make_engine

# Checksumming a large table may take minutes: the service's 5 s statement timeout would
# abort it, so backup connections get this one instead.
BACKUP_STATEMENT_TIMEOUT_S = 6 * 3600.0
_YIELD_PER = 5000
Snapshot = tuple[dict[str, TableDigest], str | None]


class DumpTool(Protocol):
    """One database, dumped to or restored from a single file."""

    engine: str
    dump_name: str

    def dump(self, dest: Path) -> Snapshot:
        """Write the dump to ``dest``; return the digests and revision of what it holds."""

    def restore(self, dump: Path) -> None:
        """Replace the database's contents with ``dump``."""

    def snapshot(self) -> Snapshot:
        """Digests of every table and the Alembic revision, as the database is now."""

    def has_data(self) -> bool:
        """True when any table other than ``alembic_version`` holds a row."""


def parse_url(url: str) -> URL:
    """Parse and check a database URL; :class:`BackupInputError` for anything unusable."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise BackupInputError(f"not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupInputError(f"unsupported database {backend!r}: use sqlite:///path or "
                               "postgresql+psycopg://user@host/db")
    if not parsed.database or parsed.database == ":memory:":
        raise BackupInputError(f"{parsed.render_as_string()}: the URL names no database")
    return parsed


def table_digests(conn: sa.Connection) -> Snapshot:
    """Row count and checksum of every table (primary-key order, byte order for text)."""
    inspector = sa.inspect(conn)
    postgres = conn.dialect.name == "postgresql"
    digests: dict[str, TableDigest] = {}
    for name in sorted(inspector.get_table_names()):
        info = inspector.get_columns(name)
        columns = [c["name"] for c in info]
        table = sa.table(name, *(sa.column(c["name"], c["type"]) for c in info))
        key = inspector.get_pk_constraint(name)["constrained_columns"] or sorted(columns)
        order = [sa.collate(table.c[k], "C")
                 if postgres and isinstance(table.c[k].type, sa.String) else table.c[k]
                 for k in key]
        result = conn.execute(sa.select(*(table.c[c] for c in columns)).order_by(*order)
                              .execution_options(yield_per=_YIELD_PER))
        digests[name] = digest_rows(columns, result)
    revision = None
    if "alembic_version" in digests:
        revision = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    return digests, revision


def _has_data(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        for name in sa.inspect(conn).get_table_names():
            if name != "alembic_version" and conn.scalar(
                    sa.select(sa.literal(1)).select_from(sa.table(name)).limit(1)):
                return True
    return False


class SqliteDumpTool:
    """A SQLite file; the dump is a standalone copy of it (rollback journal, no WAL)."""

    engine = "sqlite"
    dump_name = "cloud.sqlite"

    def __init__(self, url: str, busy_timeout_s: float = 5.0) -> None:
        database = parse_url(url).database
        assert database is not None  # parse_url guarantees it
        self.path = Path(database)
        self.busy_timeout_s = busy_timeout_s

    def dump(self, dest: Path) -> Snapshot:
        if not self.path.is_file():
            raise BackupError(f"no SQLite database at {self.path}")
        self._copy(self.path, dest)
        return _sqlite_snapshot(dest)

    def restore(self, dump: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._copy(dump, self.path, journal_mode="WAL")

    def snapshot(self) -> Snapshot:
        if not self.path.is_file():
            return {}, None
        return _sqlite_snapshot(self.path)

    def has_data(self) -> bool:
        if not self.path.is_file():
            return False
        engine = sa.create_engine(f"sqlite:///{self.path}")
        try:
            return _has_data(engine)
        finally:
            engine.dispose()

    def _copy(self, source: Path, dest: Path, journal_mode: str = "DELETE") -> None:
        """One backup step: a consistent copy under a single read snapshot of ``source``."""
        try:
            with closing(sqlite3.connect(source, timeout=self.busy_timeout_s)) as src, \
                    closing(sqlite3.connect(dest, timeout=self.busy_timeout_s)) as dst:
                src.backup(dst)
                dst.execute(f"PRAGMA journal_mode={journal_mode}")
        except sqlite3.Error as exc:
            raise BackupError(f"SQLite copy {source} -> {dest} failed: {exc}") from exc


def _sqlite_snapshot(path: Path) -> Snapshot:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return table_digests(conn)
    except sa.exc.DatabaseError as exc:
        raise BackupError(f"{path} is not a readable SQLite database: {exc.orig}") from exc
    finally:
        engine.dispose()


def find_pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore`` from PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise BackupError(f"{name} not found: install the PostgreSQL client tools "
                      "(postgresql-client, the server's major version or newer)")


class PgDumpTool:
    """A PostgreSQL database; the dump is ``pg_dump --format=custom``."""

    engine = "postgresql"
    dump_name = "cloud.pgdump"

    def __init__(self, url: str, connect_timeout_s: float = 3.0) -> None:
        self.url = parse_url(url)
        self.connect_timeout_s = connect_timeout_s

    def _engine(self) -> sa.Engine:
        return make_engine(self.url.render_as_string(hide_password=False),
                           statement_timeout_s=BACKUP_STATEMENT_TIMEOUT_S,
                           connect_timeout_s=self.connect_timeout_s)

    def _run(self, tool: str, args: list[str]) -> None:
        """Run a libpq tool against this database; the password only in its environment."""
        url = self.url
        env = {**os.environ, "PGCONNECT_TIMEOUT": str(max(1, round(self.connect_timeout_s)))}
        if url.password is not None:
            env["PGPASSWORD"] = str(url.password)
        if "sslmode" in url.query:
            env["PGSSLMODE"] = str(url.query["sslmode"])
        argv = [find_pg_tool(tool), "--host", url.host or "127.0.0.1",
                "--port", str(url.port or 5432), "--dbname", str(url.database)]
        if url.username:
            argv += ["--username", url.username]
        done = subprocess.run(argv + args, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            raise BackupError(f"{tool} failed (exit {done.returncode}): "
                              f"{lines[-1] if lines else 'no message'}")

    def dump(self, dest: Path) -> Snapshot:
        engine = self._engine()
        try:
            with engine.connect() as conn, _repeatable_read(conn) as snapshot_id:
                self._run("pg_dump", ["--format=custom", f"--snapshot={snapshot_id}",
                                      f"--file={dest}"])
                return table_digests(conn)
        finally:
            engine.dispose()

    def restore(self, dump: Path) -> None:
        self._run("pg_restore", ["--clean", "--if-exists", "--no-owner", "--exit-on-error",
                                 "--single-transaction", str(dump)])

    def snapshot(self) -> Snapshot:
        engine = self._engine()
        try:
            with engine.connect() as conn, _repeatable_read(conn):
                return table_digests(conn)
        finally:
            engine.dispose()

    def has_data(self) -> bool:
        engine = self._engine()
        try:
            return _has_data(engine)
        finally:
            engine.dispose()


@contextmanager
def _repeatable_read(conn: sa.Connection) -> Iterator[str]:
    """One REPEATABLE READ transaction; yields its exported snapshot id for ``pg_dump``."""
    conn.execution_options(isolation_level="REPEATABLE READ")
    with conn.begin():
        yield str(conn.scalar(sa.text("SELECT pg_export_snapshot()")))


def dump_tool(url: str, busy_timeout_s: float = 5.0) -> DumpTool:
    """The adapter for ``url``'s engine (raises :class:`BackupInputError` for a bad URL)."""
    if parse_url(url).get_backend_name() == "sqlite":
        return SqliteDumpTool(url, busy_timeout_s)
    return PgDumpTool(url)
