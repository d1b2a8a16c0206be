"""``SqlFirmwareStore``: bundles, the known-bad version list, gateway groups, and what each
gateway reports it runs (SQLite or PostgreSQL, behind the shared breaker)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from cloud_sync.breaker import CircuitBreaker
from cloud_sync.db.guarded import guard_db
from cloud_sync.db.schema import gateways
from cloud_sync.db.schema_firmware import (
    firmware_blocklist,
    firmware_bundles,
    gateway_firmware,
    gateway_group_members,
    gateway_groups,
)
from cloud_sync.errors import CloudSyncError, NotFound
from firmware_update.errors import BundleRejected
from firmware_update.manifest import Manifest
from firmware_update.policy import check_blocklist

__all__ = ["Bundle", "FirmwareConflict", "SqlFirmwareStore"]

T = TypeVar("T")


class FirmwareConflict(CloudSyncError):
    """The request contradicts what is stored (a different bundle under the same id, a
    blocklisted version); the REST layer answers 409 with the message."""


@dataclass(frozen=True)
class Bundle:
    bundle_id: str
    name: str
    version: str
    kind: str
    manifest: str
    size: int
    sha256: str
    status: str
    created_at: int
    expires_at: int

    def public(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["manifest"] = json.loads(self.manifest)
        return out


def bundle_id_of(manifest: Manifest) -> str:
    return f"{manifest.name}-{manifest.version}"


class SqlFirmwareStore:
    def __init__(self, engine: sa.Engine, breaker: CircuitBreaker) -> None:
        self.engine = engine
        self.breaker = breaker

    def _guard(self, func: Callable[[], T]) -> T:
        return guard_db(self.breaker, func)

    # -- bundles ---------------------------------------------------------------------------

    def add_bundle(self, manifest: Manifest, envelope: str, now: int) -> tuple[Bundle, bool]:
        """Store a verified manifest; ``(bundle, created)``. The same envelope again is a
        no-op; another manifest under the same name and version is a ``FirmwareConflict``."""
        bundle_id = bundle_id_of(manifest)

        def run() -> tuple[Bundle, bool]:
            with self.engine.begin() as conn:
                self._refuse_blocked(conn, manifest.version)
                existing = self._bundle(conn, bundle_id)
                if existing is not None:
                    if existing.sha256 != manifest.payload.sha256:
                        raise FirmwareConflict(
                            f"bundle {bundle_id} exists with another payload; publish a new "
                            "version instead of replacing one")
                    return existing, False
                conn.execute(firmware_bundles.insert().values(
                    bundle_id=bundle_id, name=manifest.name, version=manifest.version,
                    kind=manifest.kind, manifest=envelope, size=manifest.payload.size,
                    sha256=manifest.payload.sha256, status="awaiting_payload",
                    created_at=now, expires_at=int(manifest.expires.timestamp() * 1000)))
                created = self._bundle(conn, bundle_id)
                assert created is not None
                return created, True
        return self._guard(run)

    def mark_ready(self, bundle_id: str) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(firmware_bundles.update().where(
                    firmware_bundles.c.bundle_id == bundle_id).values(status="ready"))
        self._guard(run)

    def bundle(self, bundle_id: str) -> Bundle | None:
        def run() -> Bundle | None:
            with self.engine.connect() as conn:
                return self._bundle(conn, bundle_id)
        return self._guard(run)

    def bundles(self) -> list[Bundle]:
        def run() -> list[Bundle]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(firmware_bundles).order_by(
                    firmware_bundles.c.created_at)).all()
            return [Bundle(**r._mapping) for r in rows]
        return self._guard(run)

    @staticmethod
    def _bundle(conn: sa.Connection, bundle_id: str) -> Bundle | None:
        row = conn.execute(sa.select(firmware_bundles).where(
            firmware_bundles.c.bundle_id == bundle_id)).first()
        return None if row is None else Bundle(**row._mapping)

    # -- blocklist -------------------------------------------------------------------------

    def block(self, version: str, reason: str, now: int) -> bool:
        def run() -> bool:
            with self.engine.begin() as conn:
                if conn.scalar(sa.select(firmware_blocklist.c.version).where(
                        firmware_blocklist.c.version == version)):
                    return False
                conn.execute(firmware_blocklist.insert().values(version=version, reason=reason,
                                                                created_at=now))
                return True
        return self._guard(run)

    def unblock(self, version: str) -> bool:
        def run() -> bool:
            with self.engine.begin() as conn:
                return bool(conn.execute(firmware_blocklist.delete().where(
                    firmware_blocklist.c.version == version)).rowcount)
        return self._guard(run)

    def blocklist(self) -> dict[str, str]:
        def run() -> dict[str, str]:
            with self.engine.connect() as conn:
                return {r.version: r.reason for r in conn.execute(sa.select(
                    firmware_blocklist).order_by(firmware_blocklist.c.version))}
        return self._guard(run)

    def _refuse_blocked(self, conn: sa.Connection, version: str) -> None:
        blocked = {r.version: r.reason for r in conn.execute(sa.select(firmware_blocklist))}
        try:
            check_blocklist(version, blocked)
        except BundleRejected as exc:  # the cloud never offers a known-bad version
            raise FirmwareConflict(f"version {version} is blocklisted: "
                                   f"{blocked.get(version, 'known bad')}") from exc

    # -- groups ----------------------------------------------------------------------------

    def set_group(self, name: str, members: Sequence[str], now: int) -> list[str]:
        """Create or replace a group; returns unknown gateway ids (nothing is stored then)."""
        def run() -> list[str]:
            with self.engine.begin() as conn:
                known = set(conn.scalars(sa.select(gateways.c.id).where(
                    gateways.c.id.in_(list(members)))))
                unknown = sorted(set(members) - known)
                if unknown:
                    return unknown
                if conn.scalar(sa.select(gateway_groups.c.name).where(
                        gateway_groups.c.name == name)) is None:
                    conn.execute(gateway_groups.insert().values(name=name, created_at=now))
                conn.execute(gateway_group_members.delete().where(
                    gateway_group_members.c.group_name == name))
                if members:
                    conn.execute(gateway_group_members.insert(), [
                        {"group_name": name, "gateway_id": g} for g in sorted(set(members))])
                return []
        return self._guard(run)

    def group(self, name: str) -> list[str]:
        def run() -> list[str]:
            with self.engine.connect() as conn:
                if conn.scalar(sa.select(gateway_groups.c.name).where(
                        gateway_groups.c.name == name)) is None:
                    raise NotFound(f"gateway group {name!r} does not exist")
                return list(conn.scalars(sa.select(gateway_group_members.c.gateway_id).where(
                    gateway_group_members.c.group_name == name).order_by(
                    gateway_group_members.c.gateway_id)))
        return self._guard(run)

    def all_gateways(self) -> list[str]:
        def run() -> list[str]:
            with self.engine.connect() as conn:
                return list(conn.scalars(sa.select(gateways.c.id).order_by(gateways.c.id)))
        return self._guard(run)

    # -- what gateways run ----------------------------------------------------------------

    def record_versions(self, reports: Sequence[tuple[str, str, str]], now: int) -> None:
        """``(gateway_id, version, job_id)`` from finished executions."""
        def run() -> None:
            with self.engine.begin() as conn:
                for gateway_id, version, job_id in reports:
                    updated = conn.execute(gateway_firmware.update().where(
                        gateway_firmware.c.gateway_id == gateway_id).values(
                        version=version, reported_at=now, job_id=job_id)).rowcount
                    if not updated:
                        conn.execute(gateway_firmware.insert().values(
                            gateway_id=gateway_id, version=version, reported_at=now,
                            job_id=job_id))
        self._guard(run)

    def gateway_versions(self) -> list[dict[str, Any]]:
        blocked = self.blocklist()

        def run() -> list[dict[str, Any]]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(gateway_firmware).order_by(
                    gateway_firmware.c.gateway_id)).all()
            return [{**r._mapping, "blocklisted": r.version in blocked} for r in rows]
        return self._guard(run)
