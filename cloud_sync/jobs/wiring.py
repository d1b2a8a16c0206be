"""Wiring of the Jobs service and firmware rollouts into ``build_service``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI

from cloud_sync.db.firmware_store import SqlFirmwareStore
from cloud_sync.db.jobs_store import SqlJobsStore
from cloud_sync.db.rollout_store import SqlRolloutStore
from cloud_sync.db.store import SqlTelemetryStore, now_ms
from cloud_sync.firmware.api import FirmwareApiContext, register_firmware
from cloud_sync.firmware.service import FirmwareService, RolloutScheduler
from cloud_sync.jobs.service import JobsBus, JobsHousekeeper, JobsService
from cloud_sync.routing import TopicRouter
from cloud_sync.settings import CloudSettings
from cloud_sync.worker_thread import WorkerThread
from firmware_update.envelope import Envelope
from firmware_update.trust import TrustRoot, load_initial_root


@dataclass
class JobsParts:
    store: SqlJobsStore
    service: JobsService
    firmware: FirmwareService
    workers: list[WorkerThread] = field(default_factory=list)

    def mount(self, app: FastAPI) -> None:
        """The firmware REST API, operator-only except token-holding payload downloads."""
        register_firmware(app, FirmwareApiContext(self.firmware))


def _trust_root(settings: CloudSettings) -> TrustRoot | None:
    path = settings.firmware_trust_root
    return None if path is None else load_initial_root(Envelope.from_bytes(path.read_bytes()))


def build_jobs(settings: CloudSettings, store: SqlTelemetryStore, bus: JobsBus,
               router: TopicRouter) -> JobsParts:
    """The Jobs store and service on the shared engine and breaker, registered on ``router``,
    and the firmware service with its rollout scheduler."""
    jobs_store = SqlJobsStore(store.engine, store.breaker)
    housekeeper = JobsHousekeeper(jobs_store, bus)
    service = JobsService(jobs_store, bus, housekeeper, queue_size=settings.ingest_queue_size,
                          retry_max_s=settings.ingest_retry_max_s)
    service.register(router)
    firmware = FirmwareService(
        bundles=SqlFirmwareStore(store.engine, store.breaker),
        rollouts=SqlRolloutStore(store.engine, store.breaker, jobs_store),
        payload_dir=settings.effective_firmware_dir, public_url=settings.public_url,
        trust_root=_trust_root(settings), now_ms=now_ms, wake_jobs=service.wake)
    scheduler = RolloutScheduler(firmware, settings.rollout_tick_s)
    return JobsParts(jobs_store, service, firmware, [housekeeper, service, scheduler])
