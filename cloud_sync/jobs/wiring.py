"""Wiring of the Jobs service (and, on top of it, firmware rollouts) into ``build_service``."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud_sync.db.jobs_store import SqlJobsStore
from cloud_sync.db.store import SqlTelemetryStore
from cloud_sync.jobs.service import JobsBus, JobsService
from cloud_sync.routing import TopicRouter
from cloud_sync.settings import CloudSettings
from cloud_sync.worker_thread import WorkerThread


@dataclass
class JobsParts:
    store: SqlJobsStore
    service: JobsService
    workers: list[WorkerThread] = field(default_factory=list)


def build_jobs(settings: CloudSettings, store: SqlTelemetryStore, bus: JobsBus,
               router: TopicRouter) -> JobsParts:
    """The Jobs store and service on the shared engine and breaker, registered on ``router``."""
    jobs_store = SqlJobsStore(store.engine, store.breaker)
    service = JobsService(jobs_store, bus, queue_size=settings.ingest_queue_size,
                          retry_max_s=settings.ingest_retry_max_s)
    service.register(router)
    return JobsParts(jobs_store, service, [service])
