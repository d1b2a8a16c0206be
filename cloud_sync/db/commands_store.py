"""``SqlCommandStore``: commands and the transactional outbox in SQLite or PostgreSQL.

Creating a command writes the command row and its outbox row in ONE transaction, so a command
the API acknowledged is always dispatched (a crash before publishing leaves the outbox row).
Every write transaction starts by touching the gateway's row (PostgreSQL: a row lock; SQLite:
the database write lock), which serialises creations per gateway so the idempotency check,
the rate limit and the queue bound are exact even across replicas.

Lock order is always outbox row -> command row, in the dispatcher, the sweeper and the ack
path alike, so concurrent dispatchers, sweepers and acks never deadlock on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa

from cloud_sync.breaker import CircuitBreaker
from cloud_sync.command_rules import (
    OPEN_STATUSES,
    RATE_WINDOW_MS,
    CommandRequest,
    CommandRequestError,
    CommandStatus,
    Refusal,
    apply_ack,
    priority_rank,
    queue_refusal,
    rate_refusal,
)
from cloud_sync.db.guarded import guard_db
from cloud_sync.db.schema import commands, dead_letters, gateways, outbox
from cloud_sync.errors import CloudSyncError, StorageUnavailable
from cloud_sync.ports import DeadLetterIn, Device, StoredCommand
from protocols.commands import CommandAck, Priority

log = logging.getLogger(__name__)
T = TypeVar("T")
_OPEN = [s.value for s in OPEN_STATUSES]


class CommandRefused(CloudSyncError):
    """Backpressure: ``refusal`` carries the HTTP status (429/503) and Retry-After."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class AckVerdict(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # a repeat: the stored outcome stays
    UNKNOWN_COMMAND = "unknown_command"  # no such command for that gateway and device


@dataclass(frozen=True)
class CommandLimits:
    rate_per_min: int = 10
    queue_max: int = 20


class _Unknown(Exception):
    """Rolls back an ack transaction whose command does not exist."""


def new_command_id() -> str:
    return secrets.token_hex(16)  # 32 chars, matches ^[A-Za-z0-9_-]{8,64}$


class SqlCommandStore:
    """Shares the engine and the database circuit breaker with the telemetry store."""

    def __init__(self, engine: sa.Engine, breaker: CircuitBreaker) -> None:
        self.engine = engine
        self.breaker = breaker

    def _guard(self, func: Callable[[], T]) -> T:
        return guard_db(self.breaker, func)

    @property
    def _pg(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    # -- commands --------------------------------------------------------------------------

    def create_command(self, device: Device, idempotency_key: str, request: CommandRequest,
                       now_ms: int, limits: CommandLimits, *, traceparent: str | None = None,
                       ) -> tuple[StoredCommand, bool]:
        """Store a command and its outbox row atomically; ``(command, created)``.

        ``traceparent`` (the creating request's span) is stored so the dispatcher, the gateway
        and the ack continue one trace; a replay keeps the original's.

        A replay (same key, same body) returns the original with ``created=False``. Raises
        ``CommandRequestError`` (422) for the same key with a different body, and
        ``CommandRefused`` for the rate limit or a full queue (never for safety priority).
        """
        digest = request.canonical_hash()

        def run() -> tuple[StoredCommand, bool]:
            with self.engine.begin() as conn:
                self._lock_gateway(conn, device.gateway_id)
                existing = self._by_key(conn, device.id, idempotency_key)
                if existing is not None:
                    return _replay(existing, digest), False
                if request.priority is not Priority.SAFETY:
                    self._check_backpressure(conn, device, now_ms, limits)
                command_id = new_command_id()
                conn.execute(commands.insert().values(
                    command_id=command_id, device_id=device.id, gateway_id=device.gateway_id,
                    local_id=device.local_id,
                    idempotency_key=idempotency_key, request_hash=digest,
                    action=request.action.value, params=json.dumps(request.params),
                    priority=request.priority.value, status=CommandStatus.PENDING.value,
                    created_at=now_ms, expires_at=now_ms + request.ttl_s * 1000, attempts=0,
                    traceparent=traceparent))
                conn.execute(outbox.insert().values(
                    command_id=command_id, gateway_id=device.gateway_id,
                    priority=priority_rank(request.priority), available_at=now_ms, attempts=0))
                created = self._by_key(conn, device.id, idempotency_key)
                assert created is not None
                return created, True
        try:
            return self._guard(run)
        except StorageUnavailable as exc:
            # A concurrent replica inserted the same key first (possible only if the gateway
            # lock was bypassed): the unique constraint makes it a replay.
            if not isinstance(exc.__cause__, sa.exc.IntegrityError):
                raise
            existing = self.command_by_key(device.id, idempotency_key)
            if existing is None:
                raise
            return _replay(existing, digest), False

    def _lock_gateway(self, conn: sa.Connection, gateway_id: str) -> None:
        conn.execute(gateways.update().where(gateways.c.id == gateway_id)
                     .values(created_at=gateways.c.created_at))

    @staticmethod
    def _by_key(conn: sa.Connection, device_id: str, key: str) -> StoredCommand | None:
        row = conn.execute(sa.select(commands).where(commands.c.device_id == device_id,
                                                     commands.c.idempotency_key == key)).first()
        return None if row is None else command_from_row(row)

    @staticmethod
    def _check_backpressure(conn: sa.Connection, device: Device, now_ms: int,
                            limits: CommandLimits) -> None:
        c = commands.c
        # safety commands neither need nor spend a token
        recent = list(conn.scalars(sa.select(c.created_at).where(
            c.device_id == device.id, c.created_at > now_ms - RATE_WINDOW_MS,
            c.priority != Priority.SAFETY.value)))
        refusal = rate_refusal(recent, now_ms, limits.rate_per_min)
        if refusal is None:
            open_expiry = list(conn.scalars(sa.select(c.expires_at).where(
                c.gateway_id == device.gateway_id, c.status.in_(_OPEN))))
            refusal = queue_refusal(open_expiry, now_ms, limits.queue_max)
        if refusal is not None:
            raise CommandRefused(refusal)

    def command(self, device_id: str, command_id: str) -> StoredCommand | None:
        stmt = sa.select(commands).where(commands.c.command_id == command_id,
                                         commands.c.device_id == device_id)
        return self._one(stmt)

    def command_by_id(self, command_id: str) -> StoredCommand | None:
        return self._one(sa.select(commands).where(commands.c.command_id == command_id))

    def command_by_key(self, device_id: str, key: str) -> StoredCommand | None:
        stmt = sa.select(commands).where(commands.c.device_id == device_id,
                                         commands.c.idempotency_key == key)
        return self._one(stmt)

    def _one(self, stmt: sa.Select[Any]) -> StoredCommand | None:
        def run() -> StoredCommand | None:
            with self.engine.connect() as conn:
                row = conn.execute(stmt).first()
            return None if row is None else command_from_row(row)
        return self._guard(run)

    def count_commands(self, device_id: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(commands)
        if device_id is not None:
            stmt = stmt.where(commands.c.device_id == device_id)

        def run() -> int:
            with self.engine.connect() as conn:
                return int(conn.scalar(stmt) or 0)
        return self._guard(run)

    # -- acks ------------------------------------------------------------------------------

    def record_ack(self, gateway_id: str, ack: CommandAck, now_ms: int) -> AckVerdict:
        """Apply a gateway's ack idempotently; the outbox row goes with any accepted ack."""
        def run() -> AckVerdict:
            with self.engine.begin() as conn:
                conn.execute(outbox.delete().where(outbox.c.command_id == ack.command_id,
                                                   outbox.c.gateway_id == gateway_id))
                stmt = sa.select(commands).where(commands.c.command_id == ack.command_id)
                row = conn.execute(stmt.with_for_update() if self._pg else stmt).first()
                # the gateway names the device by its local id, as the command did
                if row is None or row.gateway_id != gateway_id or row.local_id != ack.device_id:
                    raise _Unknown
                update = apply_ack(CommandStatus(row.status), row.delivered_at, ack, now_ms)
                if update is None:
                    return AckVerdict.DUPLICATE
                conn.execute(commands.update().where(commands.c.command_id == ack.command_id)
                             .values(status=update.status.value, delivered_at=update.delivered_at,
                                     completed_at=update.completed_at, reason=update.reason,
                                     result=json.dumps(update.result)))
                return AckVerdict.RECORDED
        try:
            return self._guard(run)
        except _Unknown:
            return AckVerdict.UNKNOWN_COMMAND

    def add_dead_letter(self, dead: DeadLetterIn) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(dead_letters.insert().values(
                    received_at=dead.received_at, topic=dead.topic, payload=dead.payload,
                    reason=dead.reason))
        self._guard(run)


def _replay(existing: StoredCommand, digest: str) -> StoredCommand:
    if existing.request_hash != digest:
        raise CommandRequestError(
            422, "Idempotency-Key was already used for a different request body on this "
                 f"device (command {existing.command_id}); use a new key for a new command")
    return existing


def command_from_row(row: sa.Row[Any]) -> StoredCommand:
    m = row._mapping

    def opt(name: str) -> int | None:
        return None if m[name] is None else int(m[name])
    return StoredCommand(
        command_id=m["command_id"], device_id=m["device_id"], gateway_id=m["gateway_id"],
        local_id=m["local_id"],
        action=m["action"], params=json.loads(m["params"]), priority=m["priority"],
        status=m["status"], created_at=int(m["created_at"]), expires_at=int(m["expires_at"]),
        sent_at=opt("sent_at"), delivered_at=opt("delivered_at"),
        completed_at=opt("completed_at"), reason=m["reason"],
        result=None if m["result"] is None else json.loads(m["result"]),
        attempts=int(m["attempts"]), request_hash=m["request_hash"],
        traceparent=m["traceparent"])


__all__ = ["AckVerdict", "CommandLimits", "CommandRefused",
           "SqlCommandStore", "guard_db", "new_command_id"]
