"""``SqlOutbox``: claim due outbox rows, record publishes, expire what was never acked.

PostgreSQL: ``SELECT ... FOR UPDATE OF outbox SKIP LOCKED`` holds the claimed rows for the
whole publish (bounded by the PUBACK timeout), so several dispatchers at once each publish a
row in one claim at a time. SQLite: one process and one dispatcher (SQLite is the single-node
deployment); the read takes no lock, the write after the publish does, and every update is
conditional on the status so a racing ack is never overwritten.

A crash anywhere before the commit leaves the row due: it is published again (the edge
deduplicates on ``command_id``), never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from cloud_sync.breaker import CircuitBreaker
from cloud_sync.command_rules import EXPIRED_UNACKED_REASON, OPEN_STATUSES, CommandStatus
from cloud_sync.db.commands_store import command_from_row
from cloud_sync.db.guarded import guard_db
from cloud_sync.db.schema import commands, outbox
from cloud_sync.ports import StoredCommand

log = logging.getLogger(__name__)
_OPEN = [s.value for s in OPEN_STATUSES]
Publisher = Callable[[Sequence[StoredCommand]], list[str]]


class SqlOutbox:
    def __init__(self, engine: sa.Engine, breaker: CircuitBreaker) -> None:
        self.engine = engine
        self.breaker = breaker

    def dispatch_due(self, now_ms: Callable[[], int], limit: int, redelivery_ms: int,
                     publish: Publisher) -> tuple[int, int]:
        """Claim up to ``limit`` due, unexpired rows (safety first, then oldest), hand their
        commands to ``publish`` (which returns the ids the broker PUBACKed) and, in the same
        transaction, mark those ``sent`` and due again ``redelivery_ms`` later.

        Returns ``(claimed, confirmed)``. Raises ``StorageUnavailable``.
        """
        def run() -> tuple[int, int]:
            with self.engine.begin() as conn:
                claimed = self._claim(conn, now_ms(), limit)
                if not claimed:
                    return 0, 0
                confirmed = publish(claimed)
                if confirmed:
                    self._mark_published(conn, confirmed, now_ms(), redelivery_ms)
                return len(claimed), len(confirmed)
        return guard_db(self.breaker, run)

    def _claim(self, conn: sa.Connection, now: int, limit: int) -> list[StoredCommand]:
        o, c = outbox.c, commands.c
        stmt = (sa.select(commands).join(outbox, o.command_id == c.command_id)
                .where(o.available_at <= now, c.expires_at > now)
                .order_by(o.priority, o.available_at, o.id).limit(limit)
                .with_for_update(of=outbox, skip_locked=True))
        return [command_from_row(row) for row in conn.execute(stmt)]

    @staticmethod
    def _mark_published(conn: sa.Connection, ids: list[str], now: int,
                        redelivery_ms: int) -> None:
        # outbox first, then commands: the lock order every path uses
        conn.execute(outbox.update().where(outbox.c.command_id.in_(ids))
                     .values(available_at=now + redelivery_ms, published_at=now,
                             attempts=outbox.c.attempts + 1))
        conn.execute(commands.update().where(commands.c.command_id.in_(ids))
                     .values(attempts=commands.c.attempts + 1))
        conn.execute(commands.update().where(commands.c.command_id.in_(ids),
                                             commands.c.status == CommandStatus.PENDING.value)
                     .values(status=CommandStatus.SENT.value, sent_at=now))

    def next_due_ms(self) -> int | None:
        """The earliest ``available_at`` of any row (``None`` when the outbox is empty)."""
        def run() -> int | None:
            with self.engine.connect() as conn:
                value = conn.scalar(sa.select(sa.func.min(outbox.c.available_at)))
            return None if value is None else int(value)
        return guard_db(self.breaker, run)

    def expire_due(self, now: int, limit: int = 500) -> int:
        """Expire open commands past ``expires_at`` that no gateway acked; drop their outbox
        rows. Rows another dispatcher holds are skipped and expired on a later round."""
        o, c = outbox.c, commands.c

        def run() -> int:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    sa.select(o.id, o.command_id).join(commands, c.command_id == o.command_id)
                    .where(c.expires_at <= now).limit(limit)
                    .with_for_update(of=outbox, skip_locked=True)).all()
                if not rows:
                    return 0
                conn.execute(outbox.delete().where(o.id.in_([r.id for r in rows])))
                ids = [r.command_id for r in rows]
                result = conn.execute(
                    commands.update().where(c.command_id.in_(ids), c.status.in_(_OPEN))
                    .values(status=CommandStatus.EXPIRED.value, completed_at=now,
                            reason=EXPIRED_UNACKED_REASON))
                return int(result.rowcount)
        expired = guard_db(self.breaker, run)
        if expired:
            log.info("expired %d commands no gateway acknowledged in time", expired)
        return expired
