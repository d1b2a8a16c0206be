"""``SqlRegistryStore``: homes, gateways and devices in SQLite or PostgreSQL.

Registration is idempotent: adding a gateway or device that exists updates it (and revives it if
it was soft-deleted) and reports ``created=False``, so installer scripts can be re-run. Deleting
is soft: the row keeps ``deleted_at`` and everything that refers to it (readings, commands) keeps
its meaning; a deleted gateway's telemetry is dead-lettered like an unknown one's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cloud_sync.db.guarded import GuardedStore
from cloud_sync.db.schema import devices, gateways
from cloud_sync.db.schema_registry import homes
from cloud_sync.errors import Conflict, NotFound
from cloud_sync.ports import Device, Gateway, Home
from cloud_sync.registry_rules import device_id_for, new_id


def _device(row: sa.Row[Any]) -> Device:
    m = row._mapping
    return Device(m["id"], m["gateway_id"], m["kind"], json.loads(m["capabilities"]),
                  int(m["created_at"]), local_id=m["local_id"], role=m["role"],
                  model=m["model"], name=m["name"], home_id=m["home_id"])


def _home(row: sa.Row[Any]) -> Home:
    m = row._mapping
    return Home(m["id"], m["name"], m["timezone"], int(m["created_at"]))


def _gateway(row: sa.Row[Any]) -> Gateway:
    m = row._mapping
    return Gateway(m["id"], m["home_id"], m["name"], int(m["created_at"]))


# A device row with its gateway's home; deleted devices and devices of deleted gateways are
# invisible to every reader.
_DEVICES = (sa.select(devices, gateways.c.home_id)
            .join(gateways, gateways.c.id == devices.c.gateway_id)
            .where(devices.c.deleted_at.is_(None), gateways.c.deleted_at.is_(None)))
_LIVE_GATEWAYS = sa.select(gateways).where(gateways.c.deleted_at.is_(None))
_LIVE_HOMES = sa.select(homes).where(homes.c.deleted_at.is_(None))


class SqlRegistryStore(GuardedStore):

    # -- homes -----------------------------------------------------------------------------

    def create_home(self, name: str, timezone: str, now_ms: int,
                    home_id: str | None = None) -> Home:
        """Raises ``Conflict`` when ``home_id`` is taken."""
        home = Home(home_id or new_id("home"), name, timezone, now_ms)

        def run(conn: sa.Connection) -> Home:
            if conn.scalar(sa.select(homes.c.id).where(homes.c.id == home.id)) is not None:
                raise Conflict(f"home id {home.id!r} is taken")
            conn.execute(homes.insert().values(id=home.id, name=name, timezone=timezone,
                                               created_at=now_ms))
            return home
        return self._write(run)

    def home(self, home_id: str) -> Home | None:
        row = self._read(lambda c: c.execute(_LIVE_HOMES.where(homes.c.id == home_id)).first())
        return None if row is None else _home(row)

    def homes(self, home_ids: Sequence[str] | None) -> list[Home]:
        """The live homes among ``home_ids`` (``None``: all of them, for operators)."""
        stmt = _LIVE_HOMES.order_by(homes.c.created_at, homes.c.id)
        if home_ids is not None:
            stmt = stmt.where(homes.c.id.in_(list(home_ids)))
        return [_home(r) for r in self._read(lambda c: c.execute(stmt).all())]

    def update_home(self, home_id: str, *, name: str | None, timezone: str | None) -> Home:
        values = {k: v for k, v in (("name", name), ("timezone", timezone)) if v is not None}

        def run(conn: sa.Connection) -> Home:
            if values:
                conn.execute(homes.update().where(homes.c.id == home_id,
                                                  homes.c.deleted_at.is_(None)).values(**values))
            row = conn.execute(_LIVE_HOMES.where(homes.c.id == home_id)).first()
            if row is None:
                raise NotFound(f"home {home_id!r} does not exist")
            return _home(row)
        return self._write(run)

    def delete_home(self, home_id: str, now_ms: int) -> bool:
        """Soft-delete; its gateways stay registered but unassigned."""
        def run(conn: sa.Connection) -> bool:
            done = conn.execute(homes.update().where(homes.c.id == home_id,
                                                     homes.c.deleted_at.is_(None))
                                .values(deleted_at=now_ms)).rowcount
            conn.execute(gateways.update().where(gateways.c.home_id == home_id)
                         .values(home_id=None))
            return bool(done)
        return self._write(run)

    # -- gateways --------------------------------------------------------------------------

    def add_gateway(self, gateway_id: str, now_ms: int, *, home_id: str | None = None,
                    name: str | None = None) -> bool:
        """Register (or revive) a gateway, assigning it to ``home_id`` when given; ``False``
        when it existed. Raises ``NotFound`` for an unknown home and ``Conflict`` when the
        gateway serves another home (move it by removing it there first)."""
        def run(conn: sa.Connection) -> bool:
            if home_id is not None and conn.scalar(
                    sa.select(homes.c.id).where(homes.c.id == home_id,
                                                homes.c.deleted_at.is_(None))) is None:
                raise NotFound(f"home {home_id!r} does not exist")
            row = conn.execute(sa.select(gateways).where(gateways.c.id == gateway_id)).first()
            if row is None:
                conn.execute(gateways.insert().values(id=gateway_id, created_at=now_ms,
                                                      home_id=home_id, name=name))
                return True
            live = row.deleted_at is None
            if live and home_id is not None and row.home_id not in (None, home_id):
                raise Conflict(f"gateway {gateway_id!r} is assigned to another home")
            values: dict[str, Any] = {"deleted_at": None}
            if home_id is not None or not live:
                values["home_id"] = home_id
            if name is not None:
                values["name"] = name
            conn.execute(gateways.update().where(gateways.c.id == gateway_id).values(**values))
            return not live
        return self._write(run)

    def gateway(self, gateway_id: str) -> Gateway | None:
        row = self._read(lambda c: c.execute(
            _LIVE_GATEWAYS.where(gateways.c.id == gateway_id)).first())
        return None if row is None else _gateway(row)

    def gateways(self, home_id: str) -> list[Gateway]:
        stmt = _LIVE_GATEWAYS.where(gateways.c.home_id == home_id).order_by(gateways.c.id)
        return [_gateway(r) for r in self._read(lambda c: c.execute(stmt).all())]

    def delete_gateway(self, gateway_id: str, now_ms: int) -> bool:
        """Soft-delete the gateway and its devices; readings and commands stay."""
        def run(conn: sa.Connection) -> bool:
            done = conn.execute(gateways.update().where(gateways.c.id == gateway_id,
                                                        gateways.c.deleted_at.is_(None))
                                .values(deleted_at=now_ms)).rowcount
            conn.execute(devices.update().where(devices.c.gateway_id == gateway_id,
                                                devices.c.deleted_at.is_(None))
                         .values(deleted_at=now_ms))
            return bool(done)
        return self._write(run)

    # -- devices ---------------------------------------------------------------------------

    def add_device(self, gateway_id: str, local_id: str, now_ms: int, *,
                   kind: str, capabilities: Sequence[str], role: str | None = None,
                   model: str | None = None, name: str | None = None,
                   device_id: str | None = None) -> tuple[Device, bool]:
        """Register (or update, or revive) a device; ``(device, created)``. Its id defaults to
        ``{gateway_id}.{local_id}``. Raises ``NotFound`` for an unknown gateway and
        ``Conflict`` when ``device_id`` names another gateway's device."""
        wanted = device_id or device_id_for(gateway_id, local_id)
        values = {"gateway_id": gateway_id, "local_id": local_id, "kind": kind, "role": role,
                  "model": model, "name": name, "deleted_at": None,
                  "capabilities": json.dumps(list(capabilities))}

        def run(conn: sa.Connection) -> tuple[Device, bool]:
            if conn.scalar(_LIVE_GATEWAYS.with_only_columns(gateways.c.id)
                           .where(gateways.c.id == gateway_id)) is None:
                raise NotFound(f"gateway {gateway_id!r} is not registered")
            # The (gateway, local id) pair names the device on the wire: it keeps its row.
            same_local = conn.scalar(sa.select(devices.c.id).where(
                devices.c.gateway_id == gateway_id, devices.c.local_id == local_id))
            target = same_local or wanted
            existing = conn.execute(sa.select(devices.c.gateway_id, devices.c.deleted_at)
                                    .where(devices.c.id == target)).first()
            if existing is not None and existing.gateway_id != gateway_id:
                raise Conflict(f"device id {target!r} belongs to another gateway")
            if existing is None:
                conn.execute(devices.insert().values(id=target, created_at=now_ms, **values))
            else:
                conn.execute(devices.update().where(devices.c.id == target).values(**values))
            row = conn.execute(_DEVICES.where(devices.c.id == target)).first()
            assert row is not None
            return _device(row), existing is None or existing.deleted_at is not None
        return self._write(run)

    def device(self, device_id: str) -> Device | None:
        row = self._read(lambda c: c.execute(_DEVICES.where(devices.c.id == device_id)).first())
        return None if row is None else _device(row)

    def devices(self, *, home_id: str | None = None,
                gateway_id: str | None = None) -> list[Device]:
        stmt = _DEVICES.order_by(devices.c.id)
        if home_id is not None:
            stmt = stmt.where(gateways.c.home_id == home_id)
        if gateway_id is not None:
            stmt = stmt.where(devices.c.gateway_id == gateway_id)
        return [_device(r) for r in self._read(lambda c: c.execute(stmt).all())]

    def delete_device(self, device_id: str, now_ms: int) -> bool:
        return self._write(lambda c: bool(c.execute(
            devices.update().where(devices.c.id == device_id, devices.c.deleted_at.is_(None))
            .values(deleted_at=now_ms)).rowcount))
