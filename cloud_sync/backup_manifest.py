"""The backup manifest and the engine-independent table checksum (pure: no I/O).

A table's checksum is sha256 over its rows in primary-key order (byte order for text, the
same on SQLite and PostgreSQL), each row one line of canonical JSON: columns sorted by name,
``bytes`` as ``{"hex": ...}``, booleans as 0/1, ``Decimal``/dates as strings. The same rows
therefore give the same checksum on both engines, so a restore can be compared with the
manifest written at backup time.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cloud_sync.errors import CloudSyncError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class BackupError(CloudSyncError):
    """A backup, restore or verification failed; the message says what to do (exit 1)."""


class BackupInputError(BackupError):
    """Bad input: a malformed URL, a directory that holds no backup, engines that differ
    (exit 2)."""


def canonical_value(value: object) -> object:
    """Map a driver value onto the JSON form both engines agree on."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"hex": bytes(value).hex()}
    if isinstance(value, decimal.Decimal | dt.date | dt.datetime | dt.time):
        return str(value)
    return value


def canonical_row(columns: Sequence[str], row: Sequence[object]) -> bytes:
    """One row as a canonical JSON line (columns sorted by name)."""
    pairs = sorted(zip(columns, row, strict=True))
    encoded = [[name, canonical_value(value)] for name, value in pairs]
    return json.dumps(encoded, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


@dataclass
class TableDigest:
    """Row count and content checksum of one table."""

    rows: int = 0
    sha256: str = ""


def digest_rows(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> TableDigest:
    """Fold rows (already in primary-key order) into a :class:`TableDigest`."""
    hasher = hashlib.sha256()
    count = 0
    for row in rows:
        hasher.update(canonical_row(columns, row))
        count += 1
    return TableDigest(count, hasher.hexdigest())


@dataclass
class DumpFile:
    name: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """What a backup directory holds; written last, so a directory without it is incomplete."""

    created_at: str
    source: str  # URL with the password redacted
    engine: str  # "sqlite" | "postgresql"
    alembic_revision: str | None
    tables: dict[str, TableDigest]
    dump: DumpFile
    version: int = MANIFEST_VERSION
    tool: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest; raises :class:`BackupInputError` naming what is wrong."""
        try:
            data: dict[str, Any] = json.loads(text)
            if data.get("version") != MANIFEST_VERSION:
                raise BackupInputError(f"manifest version {data.get('version')!r} is not "
                                       f"{MANIFEST_VERSION}: written by another homewatt")
            return cls(created_at=data["created_at"], source=data["source"],
                       engine=data["engine"], alembic_revision=data["alembic_revision"],
                       tables={k: TableDigest(**v) for k, v in data["tables"].items()},
                       dump=DumpFile(**data["dump"]), version=data["version"],
                       tool=data.get("tool", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupInputError(f"{MANIFEST_NAME} is not a valid manifest: {exc}") from exc


@dataclass(frozen=True)
class TableCheck:
    """One table of a verification: what the manifest says against what the database has."""

    table: str
    expected: TableDigest | None
    actual: TableDigest | None

    @property
    def ok(self) -> bool:
        return self.expected == self.actual

    def describe(self) -> str:
        verdict = "ok  " if self.ok else "FAIL"
        exp = f"{self.expected.rows} rows" if self.expected else "absent"
        act = f"{self.actual.rows} rows" if self.actual else "absent"
        detail = exp if self.ok else f"manifest {exp}, restored {act}"
        if not self.ok and self.expected and self.actual and self.expected.rows == self.actual.rows:
            detail += " (checksum differs)"
        return f"{verdict} {self.table}: {detail}"


def compare(expected: Mapping[str, TableDigest],
            actual: Mapping[str, TableDigest]) -> list[TableCheck]:
    """Per-table comparison over the union of table names, sorted by name."""
    names = sorted(set(expected) | set(actual))
    return [TableCheck(n, expected.get(n), actual.get(n)) for n in names]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for manifests and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"
