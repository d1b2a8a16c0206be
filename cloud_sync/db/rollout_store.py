"""``SqlRolloutStore``: staged firmware rollouts on top of the Jobs store.

A rollout is one job; its targets (a group's members, or a stable percentage of the fleet)
are resolved at creation in notification order. :meth:`tick` advances every active rollout:
it takes a short lease on the rollout row (a conditional UPDATE, so two replicas never work
on the same rollout and no lock is held meanwhile), reads the execution counts, aborts when an
abort criterion trips (queued executions are canceled, the rest are never notified), else
queues as many executions as the rate's token bucket allows (idempotent: a crash before the
targets are marked only re-queues the same ones, which the Jobs store skips).
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from cloud_sync.breaker import CircuitBreaker
from cloud_sync.db.firmware_store import Bundle
from cloud_sync.db.guarded import guard_db
from cloud_sync.db.jobs_store import SqlJobsStore
from cloud_sync.db.schema_firmware import firmware_rollouts, rollout_targets
from cloud_sync.db.schema_jobs import job_executions
from cloud_sync.errors import NotFound
from cloud_sync.firmware.models import RolloutIn
from firmware_update.rollout import RateState, abort_verdict, notify_budget

__all__ = ["RolloutTick", "SqlRolloutStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = firmware_rollouts.c
LEASE_MS = 30_000
FINISHED = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")


@dataclass(frozen=True)
class RolloutTick:
    rollout_id: str
    notified: int = 0
    aborted: str | None = None
    completed: bool = False


class SqlRolloutStore:
    def __init__(self, engine: sa.Engine, breaker: CircuitBreaker,
                 jobs: SqlJobsStore) -> None:
        self.engine = engine
        self.breaker = breaker
        self.jobs = jobs
        self.owner = uuid.uuid4().hex[:16]

    def _guard(self, func: Callable[[], T]) -> T:
        return guard_db(self.breaker, func)

    def create(self, request: RolloutIn, bundle: Bundle, targets: list[str],
               document: Callable[[str], dict[str, Any]], now: int) -> str:
        """Store the rollout and its job; ``document(token)`` builds the job document with
        the rollout's download token. Returns the rollout id."""
        rollout_id = request.rollout_id or f"fw-{bundle.version.replace('.', '_')}-" \
                                            f"{secrets.token_hex(4)}"
        rollout_id = rollout_id.replace("+", "_")[:64]
        token = secrets.token_urlsafe(24)
        self.jobs.create_job(rollout_id, document(token), now,
                             description=f"firmware {bundle.bundle_id}",
                             in_progress_timeout_min=request.in_progress_timeout_minutes)

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(firmware_rollouts.insert().values(
                    rollout_id=rollout_id, bundle_id=bundle.bundle_id,
                    config=request.model_dump_json(), status="active", reason=None,
                    download_token=token, targets_total=len(targets), notified=0,
                    rate_tokens=None, rate_at=None, lease_owner=None, lease_until=0,
                    created_at=now, updated_at=now))
                if targets:
                    conn.execute(rollout_targets.insert(), [
                        {"rollout_id": rollout_id, "position": i, "gateway_id": g,
                         "notified_at": None} for i, g in enumerate(targets)])
        self._guard(run)
        return rollout_id

    # -- operator actions ------------------------------------------------------------------

    def set_status(self, rollout_id: str, status: str, now: int, reason: str | None = None,
                   *, allowed_from: tuple[str, ...]) -> str:
        """Move to ``status`` from one of ``allowed_from``; returns the status it had."""
        def run() -> str:
            with self.engine.begin() as conn:
                current = conn.scalar(sa.select(R.status).where(R.rollout_id == rollout_id))
                if current is None:
                    raise NotFound(f"rollout {rollout_id!r} does not exist")
                if current in allowed_from:
                    conn.execute(firmware_rollouts.update().where(
                        R.rollout_id == rollout_id).values(status=status, reason=reason,
                                                           updated_at=now))
                return str(current)
        previous = self._guard(run)
        if previous in allowed_from and status in ("canceled", "aborted"):
            self.jobs.cancel_executions(rollout_id, now)
            self.jobs.set_job_status(rollout_id, "CANCELED", now)
        return previous

    def cancel_version(self, version: str, now: int, reason: str) -> list[str]:
        """Cancel every active or paused rollout of ``version`` (it was blocklisted)."""
        def run() -> list[str]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(R.rollout_id, R.bundle_id).where(
                    R.status.in_(["active", "paused"]))).all()
            return [r.rollout_id for r in rows if r.bundle_id.endswith(f"-{version}")]
        ids = self._guard(run)
        for rollout_id in ids:
            self.set_status(rollout_id, "canceled", now, reason,
                            allowed_from=("active", "paused"))
        return ids

    def get(self, rollout_id: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(firmware_rollouts).where(
                    R.rollout_id == rollout_id)).first()
            if row is None:
                raise NotFound(f"rollout {rollout_id!r} does not exist")
            m = row._mapping
            return {"rollout_id": m["rollout_id"], "bundle_id": m["bundle_id"],
                    "status": m["status"], "reason": m["reason"],
                    "targets": m["targets_total"], "notified": m["notified"],
                    "config": json.loads(m["config"]), "created_at": m["created_at"],
                    "updated_at": m["updated_at"]}
        out = self._guard(run)
        out["executions"] = self.jobs.execution_counts(rollout_id)
        return out

    def token_allows(self, bundle_id: str, token: str) -> bool:
        """A device may download ``bundle_id`` with a token of one of its live rollouts."""
        def run() -> bool:
            with self.engine.connect() as conn:
                tokens = list(conn.scalars(sa.select(R.download_token).where(
                    R.bundle_id == bundle_id, R.status.in_(["active", "paused", "completed",
                                                            "aborted"]))))
            return any(secrets.compare_digest(t, token) for t in tokens)
        return self._guard(run)

    # -- the scheduler's step --------------------------------------------------------------

    def tick(self, now: int) -> list[RolloutTick]:
        def active() -> list[str]:
            with self.engine.connect() as conn:
                return list(conn.scalars(sa.select(R.rollout_id).where(R.status == "active")))
        results = []
        for rollout_id in self._guard(active):
            if self._lease(rollout_id, now):
                try:
                    results.append(self._advance(rollout_id, now))
                finally:
                    self._release(rollout_id)
        return results

    def _lease(self, rollout_id: str, now: int) -> bool:
        def run() -> bool:
            with self.engine.begin() as conn:
                return bool(conn.execute(firmware_rollouts.update().where(
                    R.rollout_id == rollout_id, R.status == "active", R.lease_until < now)
                    .values(lease_owner=self.owner, lease_until=now + LEASE_MS)).rowcount)
        return self._guard(run)

    def _release(self, rollout_id: str) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(firmware_rollouts.update().where(
                    R.rollout_id == rollout_id, R.lease_owner == self.owner)
                    .values(lease_owner=None, lease_until=0))
        self._guard(run)

    def _advance(self, rollout_id: str, now: int) -> RolloutTick:
        row = self._row(rollout_id)
        config = RolloutIn.model_validate_json(row["config"])
        counts = self.jobs.execution_counts(rollout_id)
        reason = abort_verdict([a.criterion() for a in config.abort], counts)
        if reason is not None:
            log.error("rollout %s aborted: %s", rollout_id, reason)
            self.set_status(rollout_id, "aborted", now, reason, allowed_from=("active",))
            return RolloutTick(rollout_id, aborted=reason)
        notified = int(row["notified"])
        if notified >= int(row["targets_total"]):
            return self._maybe_complete(rollout_id, counts, notified, now)
        state = None if row["rate_at"] is None else RateState(row["rate_tokens"], row["rate_at"])
        budget, state = notify_budget(config.rate.config(), state, now, notified,
                                      counts.get("SUCCEEDED", 0))
        batch = self._next_targets(rollout_id, budget)
        if batch:
            self.jobs.queue_executions(rollout_id, batch, now)
        self._mark_notified(rollout_id, batch, state, now)
        return RolloutTick(rollout_id, notified=len(batch))

    def _maybe_complete(self, rollout_id: str, counts: dict[str, int], notified: int,
                        now: int) -> RolloutTick:
        if sum(counts.get(s, 0) for s in FINISHED) < notified:
            return RolloutTick(rollout_id)
        self.set_status(rollout_id, "completed", now, allowed_from=("active",))
        self.jobs.set_job_status(rollout_id, "COMPLETED", now)
        return RolloutTick(rollout_id, completed=True)

    def _row(self, rollout_id: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with self.engine.connect() as conn:
                return dict(conn.execute(sa.select(firmware_rollouts).where(
                    R.rollout_id == rollout_id)).one()._mapping)
        return self._guard(run)

    def _next_targets(self, rollout_id: str, limit: int) -> list[str]:
        if limit <= 0:
            return []

        def run() -> list[str]:
            with self.engine.connect() as conn:
                return list(conn.scalars(sa.select(rollout_targets.c.gateway_id).where(
                    rollout_targets.c.rollout_id == rollout_id,
                    rollout_targets.c.notified_at.is_(None)).order_by(
                    rollout_targets.c.position).limit(limit)))
        return self._guard(run)

    def _mark_notified(self, rollout_id: str, batch: list[str], state: RateState,
                       now: int) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                if batch:
                    conn.execute(rollout_targets.update().where(
                        rollout_targets.c.rollout_id == rollout_id,
                        rollout_targets.c.gateway_id.in_(batch)).values(notified_at=now))
                conn.execute(firmware_rollouts.update().where(R.rollout_id == rollout_id)
                             .values(notified=R.notified + len(batch), rate_tokens=state.tokens,
                                     rate_at=state.at_ms, updated_at=now))
        self._guard(run)

    def finished_reports(self, rollout_id: str) -> list[tuple[str, str, str]]:
        """``(gateway, installed version, job)`` from the executions' status details."""
        def run() -> list[tuple[str, str, str]]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(job_executions.c.thing_name,
                                              job_executions.c.status_details).where(
                    job_executions.c.job_id == rollout_id,
                    job_executions.c.status.in_(list(FINISHED)))).all()
            out = []
            for thing, details in rows:
                installed = json.loads(details or "{}").get("installed")
                if installed and installed != "unknown":
                    out.append((str(thing), str(installed), rollout_id))
            return out
        return self._guard(run)
