"""Helpers for the backup and migration-with-data tests: databases holding data in every table.

``fill_with_store`` writes through the real stores (telemetry, dead letters, devices,
commands + outbox); ``fill_every_table`` writes fixed rows with plain inserts, so two
databases filled by it hold identical content.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from cloud_sync.auth.principal import Role
from cloud_sync.command_rules import CommandRequest
from cloud_sync.db import migrate
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.commands_store import CommandLimits, SqlCommandStore
from cloud_sync.db.engine import make_engine
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.schema import commands, dead_letters, devices, gateways, outbox, readings
from cloud_sync.db.schema_provisioning import (
    certificates,
    provisioning_claims,
    provisioning_templates,
)
from cloud_sync.db.schema_registry import api_key_scopes, api_keys, homes, memberships, users
from cloud_sync.db.store import SqlTelemetryStore, make_db_breaker, now_ms
from cloud_sync.ports import DeadLetterIn
from protocols.commands import Action, Priority
from tests.integration.conftest_analytics import fill_analytics
from tests.integration.conftest_cloud import make_batch

GATEWAYS = ("gw-1", "gw-2")


def fill_with_store(url: str, readings_per_gateway: int = 300) -> None:
    """Migrate ``url`` and write telemetry, a dead letter, devices and commands through the
    service's own stores."""
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        breaker = make_db_breaker(3, 1.0)
        telemetry = SqlTelemetryStore(engine, breaker)
        for gw in GATEWAYS:
            telemetry.add_gateway(gw)
        batches = [make_batch(1 + i * 100, 100, gw=gw)
                   for gw in GATEWAYS for i in range(readings_per_gateway // 100)]
        dead = [DeadLetterIn("hw/gw-x/telemetry", b"\x00\xffnot json", "decode error", now_ms())]
        telemetry.ingest(batches, dead)
        store = SqlCommandStore(engine, breaker)
        registry = SqlRegistryStore(engine, breaker)
        auth = SqlAuthStore(engine, breaker)  # filled twice in one test: get-or-create
        home = registry.home("backup-home") or registry.create_home(
            "backup home", "Europe/Berlin", now_ms(), home_id="backup-home")
        owner = auth.user_by_email("owner@example.com") or auth.create_user(
            "owner@example.com", None, now_ms())
        auth.set_membership(owner.id, home.id, Role.OWNER, now_ms())
        for gw in GATEWAYS:
            registry.add_gateway(gw, now_ms(), home_id=home.id)
            device, _ = registry.add_device(gw, "relay", now_ms(), kind="actuator",
                                            capabilities=["switch_on", "switch_off"])
            for action in (Action.SWITCH_ON, Action.SWITCH_OFF):
                store.create_command(device, uuid.uuid4().hex,
                                     CommandRequest(action, {}, 60, Priority.NORMAL),
                                     now_ms(), CommandLimits(1000, 1000))
    finally:
        engine.dispose()


def _command(i: int) -> dict[str, Any]:
    return {"command_id": f"c-{i}", "device_id": "dev-1", "gateway_id": "gw-1",
            "local_id": "dev-1",
            "idempotency_key": f"key-{i}", "request_hash": "ab" * 32, "action": "switch_on",
            "params": '{"level": 0.5}', "priority": "normal", "status": "pending",
            "created_at": 1_700_000_000_000 + i, "expires_at": 1_700_000_060_000 + i,
            "sent_at": None if i % 2 else 1_700_000_000_500, "delivered_at": None,
            "completed_at": None, "reason": None, "result": None, "attempts": i}


def fill_every_table(engine: sa.Engine) -> None:
    """Deterministic rows in every table of the head schema (unicode, bytes, NULLs, floats)."""
    with engine.begin() as conn:
        _fill_registry(conn)
        conn.execute(gateways.insert(), [
            {"id": gw, "created_at": 1_700_000_000_000, "home_id": home, "name": name,
             "deleted_at": deleted}
            for gw, home, name, deleted in (("gw-1", "home-1", "Keller", None),
                                            ("Gw-2", None, None, None),
                                            ("gw-ä", "home-1", "Dachböden ☀", 1_700_000_500_000))])
        conn.execute(readings.insert(), [
            {"gateway_id": gw, "seq": seq, "meter_id": "m1", "channel": "power_w",
             "value": None if seq == 3 else seq * 0.1, "unit": "W",
             "ts": 1_700_000_000_000 + seq * 1000, "quality": "good"}
            for gw in ("gw-1", "Gw-2") for seq in range(1, 21)])
        conn.execute(dead_letters.insert(), [
            {"received_at": 1_700_000_000_000, "topic": "hw/gw-9/telemetry",
             "payload": bytes(range(256)), "reason": "unknown gateway", "replayed_at": None}])
        conn.execute(devices.insert(), [
            {"id": "dev-1", "gateway_id": "gw-1", "kind": "actuator", "local_id": "dev-1",
             "capabilities": '["switch_on"]', "created_at": 1_700_000_000_000,
             "deleted_at": None, "role": None, "model": "relay", "name": "Boiler"},
            {"id": "gw-1.grid", "gateway_id": "gw-1", "kind": "meter", "local_id": "grid",
             "capabilities": "[]", "created_at": 1_700_000_000_000,
             "deleted_at": 1_700_000_900_000, "role": "grid", "model": "sdm630", "name": None}])
        conn.execute(commands.insert(), [_command(i) for i in range(1, 6)])
        conn.execute(outbox.insert(), [
            {"command_id": f"c-{i}", "gateway_id": "gw-1", "priority": 1,
             "available_at": 1_700_000_000_000 + i, "attempts": 0, "published_at": None}
            for i in range(1, 6)])
        fill_analytics(conn)
        _fill_provisioning(conn)


def _fill_provisioning(conn: sa.Connection) -> None:
    """Rows in the fleet-provisioning tables (revision 0006)."""
    conn.execute(provisioning_templates.insert(), [
        {"name": "shop-gw", "thing_name": "shop-{S}", "parameters": '{"S": "[0-9]+"}',
         "device_configuration": '{"k": "v"}', "enabled": False, "created_at": 1}])
    conn.execute(provisioning_claims.insert(), [
        {"id": f"claim-{i}", "code_digest": f"{i:064x}", "home_id": "home-1",
         "created_at": 1, "expires_at": 2, "certificates_issued": i,
         "consumed_at": None if i == 1 else 3, "gateway_id": None if i == 1 else "gw-1"}
        for i in (1, 2)])
    conn.execute(certificates.insert(), [
        {"certificate_id": f"{i:064x}", "common_name": "gw-1", "gateway_id": "gw-1",
         "claim_id": "claim-2", "home_id": "home-1", "status": status, "pem": "PEM\n",
         "not_after": 9, "created_at": 1, "activated_at": None, "revoked_at": None,
         "token_digest": f"{i + 10:064x}", "token_expires_at": 5, "token_used_at": None,
         "register_request_digest": None, "register_response": None}
        for i, status in ((1, "ACTIVE"), (2, "REVOKED"))])


def _fill_registry(conn: sa.Connection) -> None:
    conn.execute(homes.insert(), [
        {"id": "home-1", "name": "Müller", "timezone": "Europe/Berlin",
         "created_at": 1_700_000_000_000, "deleted_at": None},
        {"id": "home-2", "name": "gone", "timezone": "UTC", "created_at": 1_700_000_000_000,
         "deleted_at": 1_700_000_100_000}])
    conn.execute(users.insert(), [
        {"id": "user-1", "email": "owner@example.com", "name": "Ö. Wner",
         "password_hash": "scrypt$16384$8$1$c2FsdA$aGFzaA", "operator": False,
         "created_at": 1_700_000_000_000, "deleted_at": None},
        {"id": "user-2", "email": "ops@example.com", "name": None, "password_hash": None,
         "operator": True, "created_at": 1_700_000_000_000, "deleted_at": None}])
    conn.execute(memberships.insert(), [
        {"user_id": "user-1", "home_id": "home-1", "role": "owner",
         "created_at": 1_700_000_000_000}])
    conn.execute(api_keys.insert(), [
        {"id": "0123456789abcdef", "name": "script", "secret_sha256": "ab" * 32,
         "user_id": "user-1", "operator": False, "created_at": 1_700_000_000_000,
         "expires_at": None, "revoked_at": None}])
    conn.execute(api_key_scopes.insert(), [
        {"api_key_id": "0123456789abcdef", "home_id": "home-1", "role": "member"}])


def table_rows(engine: sa.Engine) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every table's columns and rows (sorted), to compare before and after a migration."""
    out: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for name in inspector.get_table_names():
            if name == "alembic_version":
                continue
            cols = sorted(c["name"] for c in inspector.get_columns(name))
            table = sa.table(name, *(sa.column(c) for c in cols))
            rows = [tuple(r) for r in conn.execute(sa.select(*table.c))]
            out[name] = (cols, sorted(rows, key=repr))
    return out
