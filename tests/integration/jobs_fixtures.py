"""A running cloud (SQLite) with its Jobs service, for the Jobs and firmware tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.bootstrap import CloudService
from cloud_sync.db.jobs_store import SqlJobsStore
from cloud_sync.firmware.service import FirmwareService, RolloutScheduler
from cloud_sync.jobs.service import JobsService
from tests.integration.conftest_cloud import BROKER_EXTRA, cloud_settings, register, started
from tests.services import Mosquitto, running_mosquitto


def jobs_of(service: CloudService) -> JobsService:
    return next(s for s in service.services if isinstance(s, JobsService))


def firmware_of(service: CloudService) -> FirmwareService:
    return next(s.service for s in service.services if isinstance(s, RolloutScheduler))


def jobs_store(service: CloudService) -> SqlJobsStore:
    return SqlJobsStore(service.engine, service.store.breaker)


@pytest.fixture
def jobs_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    with running_mosquitto(workdir, BROKER_EXTRA) as running:
        yield running


@pytest.fixture
def jobs_cloud(jobs_broker: Mosquitto, tmp_path: Path) -> Iterator[CloudService]:
    settings = cloud_settings(f"sqlite:///{tmp_path / 'cloud.sqlite'}", jobs_broker, tmp_path)
    register(settings, "gw-1")
    service = started(settings)
    try:
        yield service
    finally:
        service.stop()
