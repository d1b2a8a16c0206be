"""``SqlJobsStore``: job executions with AWS IoT Jobs semantics in SQLite or PostgreSQL.

Every change to a thing's executions runs in one transaction that first locks the thing's
``job_things`` row (PostgreSQL ``FOR UPDATE``; SQLite's write lock), so concurrent requests of
one thing, on several cloud replicas, are serialised: a version number is bumped exactly once
per accepted update and ``expectedVersion`` is exact. The same transaction sets
``notify_pending`` when the thing's next execution changed; :meth:`publish_notifications`
claims those rows (``FOR UPDATE SKIP LOCKED``) so exactly one replica sends each notify-next.
Lock order is always thing row, then execution rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloud_sync.breaker import CircuitBreaker
from cloud_sync.db.guarded import guard_db
from cloud_sync.db.schema_jobs import job_executions, job_things, jobs
from cloud_sync.jobs import wire
from protocols.jobs import (
    NEXT,
    PENDING,
    DescribeRequest,
    ExecutionStatus,
    JobsError,
    JobsErrorCode,
    StartNextRequest,
    UpdateRequest,
    check_update,
)

__all__ = ["SqlJobsStore"]

T = TypeVar("T")
E = job_executions.c
_PENDING = [s.value for s in PENDING]
MINUTE_MS = 60_000


class SqlJobsStore:
    def __init__(self, engine: sa.Engine, breaker: CircuitBreaker) -> None:
        self.engine = engine
        self.breaker = breaker

    @property
    def _pg(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _guard(self, func: Callable[[], T]) -> T:
        return guard_db(self.breaker, func)

    # -- jobs (the operator's side) --------------------------------------------------------

    def create_job(self, job_id: str, document: dict[str, Any], now: int, *,
                   description: str = "", in_progress_timeout_min: int | None = None) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(jobs.insert().values(
                    job_id=job_id, document=json.dumps(document), status="IN_PROGRESS",
                    description=description, in_progress_timeout_min=in_progress_timeout_min,
                    created_at=now))
        self._guard(run)

    def queue_executions(self, job_id: str, things: Iterable[str], now: int) -> int:
        """Create QUEUED executions (existing ones are left alone); returns how many."""
        def run() -> int:
            created = 0
            with self.engine.begin() as conn:
                for thing in things:
                    thing_row = self._lock_thing(conn, thing, now)
                    if conn.scalar(sa.select(E.job_id).where(E.job_id == job_id,
                                                             E.thing_name == thing)):
                        continue
                    seq = int(thing_row.execution_seq) + 1
                    conn.execute(job_things.update().where(job_things.c.thing_name == thing)
                                 .values(execution_seq=seq))
                    conn.execute(job_executions.insert().values(
                        job_id=job_id, thing_name=thing, execution_number=seq,
                        status=ExecutionStatus.QUEUED.value, version_number=1,
                        queued_at=now, last_updated_at=now))
                    self._refresh_next(conn, thing, thing_row.next_job_id, now)
                    created += 1
            return created
        return self._guard(run)

    def cancel_executions(self, job_id: str, now: int, *, force: bool = False) -> int:
        """QUEUED executions (and IN_PROGRESS ones with ``force``) become CANCELED."""
        statuses = _PENDING if force else [ExecutionStatus.QUEUED.value]

        def run() -> int:
            with self.engine.begin() as conn:
                things = list(conn.scalars(sa.select(E.thing_name).where(
                    E.job_id == job_id, E.status.in_(statuses))))
            count = 0
            for thing in things:
                with self.engine.begin() as conn:
                    row = self._lock_thing(conn, thing, now)
                    count += conn.execute(job_executions.update().where(
                        E.job_id == job_id, E.thing_name == thing, E.status.in_(statuses))
                        .values(status=ExecutionStatus.CANCELED.value,
                                version_number=E.version_number + 1, last_updated_at=now,
                                step_timeout_at=None, in_progress_timeout_at=None)).rowcount
                    self._refresh_next(conn, thing, row.next_job_id, now)
            return count
        return self._guard(run)

    def set_job_status(self, job_id: str, status: str, now: int) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(jobs.update().where(jobs.c.job_id == job_id).values(
                    status=status, completed_at=None if status == "IN_PROGRESS" else now))
        self._guard(run)

    def execution_counts(self, job_id: str) -> dict[str, int]:
        def run() -> dict[str, int]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(E.status, sa.func.count()).where(
                    E.job_id == job_id).group_by(E.status)).all()
            return {str(status): int(n) for status, n in rows}
        return self._guard(run)

    def execution(self, job_id: str, thing: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(job_executions).where(
                    E.job_id == job_id, E.thing_name == thing)).first()
            return None if row is None else wire.execution(row._mapping, None)
        return self._guard(run)

    # -- the device API --------------------------------------------------------------------

    def get_pending(self, thing: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.engine.connect() as conn:
                rows = conn.execute(self._pending_query(thing)).all()
            summaries = [(r.status, wire.execution_summary(r._mapping)) for r in rows]
            return {"inProgressJobs": [s for st, s in summaries if st == "IN_PROGRESS"],
                    "queuedJobs": [s for st, s in summaries if st == "QUEUED"]}
        return self._guard(run)

    def start_next(self, thing: str, request: StartNextRequest, now: int,
                   ) -> dict[str, Any] | None:
        """The next pending execution, moved to IN_PROGRESS; ``None`` when there is none."""
        def run() -> dict[str, Any] | None:
            with self.engine.begin() as conn:
                thing_row = self._lock_thing(conn, thing, now)
                row = conn.execute(self._pending_query(thing).limit(1)).first()
                if row is None:
                    return None
                values = self._progress_values(conn, row, request.statusDetails,
                                               request.stepTimeoutInMinutes, now)
                if values:
                    conn.execute(job_executions.update().where(
                        E.job_id == row.job_id, E.thing_name == thing).values(**values))
                self._refresh_next(conn, thing, thing_row.next_job_id, now)
                return self._execution_json(conn, row.job_id, thing, include_doc=True)
        return self._guard(run)

    def describe(self, thing: str, job_id: str, request: DescribeRequest) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.engine.connect() as conn:
                if job_id == NEXT:
                    row = conn.execute(self._pending_query(thing).limit(1)).first()
                    if row is None:
                        return {}
                    job_id_ = str(row.job_id)
                else:
                    job_id_ = job_id
                found = self._execution_json(conn, job_id_, thing,
                                             include_doc=request.includeJobDocument)
            if found is None or (request.executionNumber is not None
                                 and found["executionNumber"] != request.executionNumber):
                raise JobsError(JobsErrorCode.RESOURCE_NOT_FOUND,
                                f"no execution of job {job_id} for thing {thing}")
            return {"execution": found}
        return self._guard(run)

    def update(self, thing: str, job_id: str, request: UpdateRequest, now: int
               ) -> dict[str, Any]:
        """Apply a device's update; the reply body (``executionState``/``jobDocument`` when
        asked). Raises ``JobsError`` for every AWS rejection."""
        def run() -> dict[str, Any]:
            with self.engine.begin() as conn:
                thing_row = self._lock_thing(conn, thing, now)
                row = conn.execute(sa.select(job_executions).where(
                    E.job_id == job_id, E.thing_name == thing)).first()
                if row is None or (request.executionNumber is not None
                                   and request.executionNumber != row.execution_number):
                    raise JobsError(JobsErrorCode.RESOURCE_NOT_FOUND,
                                    f"no execution of job {job_id} for thing {thing}")
                replay = self._replay(row, request)
                if not replay:
                    check_update(ExecutionStatus(row.status), int(row.version_number),
                                 request, wire.execution_state(row._mapping))
                    self._apply_update(conn, row, request, now)
                    self._refresh_next(conn, thing, thing_row.next_job_id, now)
                return self._update_reply(conn, job_id, thing, request)
        return self._guard(run)

    @staticmethod
    def _replay(row: sa.Row[Any], request: UpdateRequest) -> bool:
        """The broker redelivered a request we applied: same client token, same status."""
        return (request.clientToken is not None and row.last_client_token == request.clientToken
                and row.status == request.status.value)

    def _apply_update(self, conn: sa.Connection, row: sa.Row[Any], request: UpdateRequest,
                      now: int) -> None:
        values: dict[str, Any] = {"status": request.status.value,
                                  "version_number": E.version_number + 1,
                                  "last_updated_at": now,
                                  "last_client_token": request.clientToken}
        if request.statusDetails is not None:
            values["status_details"] = json.dumps(request.statusDetails, sort_keys=True)
        if request.status is ExecutionStatus.IN_PROGRESS:
            if row.started_at is None:
                values.update(self._start_values(conn, row.job_id, now))
            if request.stepTimeoutInMinutes is not None:
                values["step_timeout_at"] = now + request.stepTimeoutInMinutes * MINUTE_MS
        else:
            values.update(step_timeout_at=None, in_progress_timeout_at=None)
        conn.execute(job_executions.update().where(
            E.job_id == row.job_id, E.thing_name == row.thing_name,
            E.version_number == row.version_number).values(**values))

    def _update_reply(self, conn: sa.Connection, job_id: str, thing: str,
                      request: UpdateRequest) -> dict[str, Any]:
        row = conn.execute(sa.select(job_executions).where(
            E.job_id == job_id, E.thing_name == thing)).one()
        out: dict[str, Any] = {}
        if request.includeJobExecutionState:
            out["executionState"] = wire.execution_state(row._mapping)
        if request.includeJobDocument:
            doc = conn.scalar(sa.select(jobs.c.document).where(jobs.c.job_id == job_id))
            out["jobDocument"] = json.loads(str(doc))
        return out

    # -- timeouts and notifications --------------------------------------------------------

    def sweep_timeouts(self, now: int, limit: int = 500) -> int:
        """IN_PROGRESS executions past their step or in-progress timeout become TIMED_OUT."""
        due = sa.or_(E.step_timeout_at <= now, E.in_progress_timeout_at <= now)

        def run() -> int:
            with self.engine.connect() as conn:
                candidates = conn.execute(sa.select(E.job_id, E.thing_name).where(
                    E.status == ExecutionStatus.IN_PROGRESS.value, due).limit(limit)).all()
            timed_out = 0
            for job_id, thing in candidates:
                with self.engine.begin() as conn:
                    thing_row = self._lock_thing(conn, thing, now, skip_locked=True)
                    if thing_row is None:
                        continue  # another replica is on it
                    timed_out += conn.execute(job_executions.update().where(
                        E.job_id == job_id, E.thing_name == thing,
                        E.status == ExecutionStatus.IN_PROGRESS.value, due).values(
                        status=ExecutionStatus.TIMED_OUT.value, last_updated_at=now,
                        version_number=E.version_number + 1, step_timeout_at=None,
                        in_progress_timeout_at=None)).rowcount
                    self._refresh_next(conn, thing, thing_row.next_job_id, now)
            return timed_out
        return self._guard(run)

    def next_timeout_ms(self) -> int | None:
        def run() -> int | None:
            with self.engine.connect() as conn:
                step = conn.scalar(sa.select(sa.func.min(E.step_timeout_at)).where(
                    E.status == ExecutionStatus.IN_PROGRESS.value))
                total = conn.scalar(sa.select(sa.func.min(E.in_progress_timeout_at)).where(
                    E.status == ExecutionStatus.IN_PROGRESS.value))
            values = [int(v) for v in (step, total) if v is not None]
            return min(values) if values else None
        return self._guard(run)

    def publish_notifications(self, publish: Callable[[str, dict[str, Any] | None], bool],
                              limit: int = 100) -> int:
        """For each thing whose next execution changed: ``publish(thing, execution|None)``
        (True once the broker has it) and clear the flag, in the claiming transaction."""
        def run() -> int:
            sent = 0
            with self.engine.begin() as conn:
                stmt = sa.select(job_things.c.thing_name).where(
                    job_things.c.notify_pending.is_(True)).limit(limit)
                if self._pg:
                    stmt = stmt.with_for_update(skip_locked=True)
                else:  # SQLite: take the write lock first so a second claimer waits
                    conn.execute(job_things.update().where(
                        job_things.c.notify_pending.is_(True)).values(
                        updated_at=job_things.c.updated_at))
                for thing in list(conn.scalars(stmt)):
                    row = conn.execute(self._pending_query(thing).limit(1)).first()
                    found = None if row is None else self._execution_json(
                        conn, row.job_id, thing, include_doc=True)
                    if publish(thing, found):
                        conn.execute(job_things.update().where(
                            job_things.c.thing_name == thing).values(notify_pending=False))
                        sent += 1
            return sent
        return self._guard(run)

    def pending_notifications(self) -> int:
        def run() -> int:
            with self.engine.connect() as conn:
                return int(conn.scalar(sa.select(sa.func.count()).where(
                    job_things.c.notify_pending.is_(True))) or 0)
        return self._guard(run)

    # -- helpers ---------------------------------------------------------------------------

    def _lock_thing(self, conn: sa.Connection, thing: str, now: int, *,
                    skip_locked: bool = False) -> Any:
        insert = pg_insert if self._pg else sqlite_insert
        conn.execute(insert(job_things).values(
            thing_name=thing, next_job_id=None, notify_pending=False, execution_seq=0,
            updated_at=now).on_conflict_do_nothing(index_elements=["thing_name"]))
        stmt = sa.select(job_things).where(job_things.c.thing_name == thing)
        if self._pg:
            stmt = stmt.with_for_update(skip_locked=skip_locked)
        else:  # SQLite: a write takes the database lock for the rest of the transaction
            conn.execute(job_things.update().where(job_things.c.thing_name == thing)
                         .values(updated_at=now))
        return conn.execute(stmt).first()

    @staticmethod
    def _pending_query(thing: str) -> sa.Select[Any]:
        in_progress_first = sa.case((E.status == ExecutionStatus.IN_PROGRESS.value, 0), else_=1)
        return (sa.select(job_executions)
                .where(E.thing_name == thing, E.status.in_(_PENDING))
                .order_by(in_progress_first, E.queued_at, E.execution_number))

    def _refresh_next(self, conn: sa.Connection, thing: str, previous: str | None,
                      now: int) -> None:
        row = conn.execute(self._pending_query(thing).limit(1)).first()
        current = None if row is None else str(row.job_id)
        if current != previous:
            conn.execute(job_things.update().where(job_things.c.thing_name == thing).values(
                next_job_id=current, notify_pending=True, updated_at=now))

    def _start_values(self, conn: sa.Connection, job_id: str, now: int) -> dict[str, Any]:
        timeout = conn.scalar(sa.select(jobs.c.in_progress_timeout_min).where(
            jobs.c.job_id == job_id))
        return {"started_at": now,
                "in_progress_timeout_at": None if timeout is None else now + timeout * MINUTE_MS}

    def _progress_values(self, conn: sa.Connection, row: sa.Row[Any],
                         details: dict[str, str] | None, step_min: int | None,
                         now: int) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if row.status == ExecutionStatus.QUEUED.value:
            values.update(status=ExecutionStatus.IN_PROGRESS.value,
                          **self._start_values(conn, row.job_id, now))
        if details is not None:
            values["status_details"] = json.dumps(details, sort_keys=True)
        if step_min is not None:
            values["step_timeout_at"] = now + step_min * MINUTE_MS
        if values:
            values.update(version_number=E.version_number + 1, last_updated_at=now)
        return values

    def _execution_json(self, conn: sa.Connection, job_id: str, thing: str, *,
                        include_doc: bool) -> dict[str, Any] | None:
        row = conn.execute(sa.select(job_executions).where(
            E.job_id == job_id, E.thing_name == thing)).first()
        if row is None:
            return None
        doc = conn.scalar(sa.select(jobs.c.document).where(jobs.c.job_id == job_id)) \
            if include_doc else None
        return wire.execution(row._mapping, doc)

    def thing_names(self, job_id: str, statuses: Sequence[str]) -> list[str]:
        def run() -> list[str]:
            with self.engine.connect() as conn:
                return list(conn.scalars(sa.select(E.thing_name).where(
                    E.job_id == job_id, E.status.in_(list(statuses)))))
        return self._guard(run)
