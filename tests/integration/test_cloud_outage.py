"""A dead database turns into fast 503s and held MQTT acks; everything lands once it is back."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.bootstrap import CloudService
from tests.auth_helpers import operator_key
from tests.integration.conftest_cloud import (  # noqa: F401 - fixtures
    GW,
    DbOutage,
    Edge,
    api_client,
    broker,
    cloud_settings,
    db_url,
    edge,
    make_batch,
    outage,
    register,
    started,
    wait_until,
)
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture
def service(outage: DbOutage, broker: Mosquitto, tmp_path: Path) -> Iterator[CloudService]:
    settings = cloud_settings(outage.url, broker, tmp_path, db_statement_timeout_s=0.5,
                              db_connect_timeout_s=1.0, db_breaker_fail_max=2,
                              db_breaker_reset_s=1.0, readyz_db_timeout_s=1.0)
    register(settings, GW)
    running = started(settings)
    yield running
    outage.end()
    running.stop()


async def test_db_outage_gives_fast_503s_and_holds_acks_until_it_is_back(
        service: CloudService, outage: DbOutage, edge: Edge) -> None:
    edge.send(make_batch(1, 10))
    edge.wait_acked(GW, range(1, 11))
    api_key = operator_key(service.engine)
    outage.begin()
    for first in range(11, 111, 10):
        edge.send(make_batch(first, 10))
    wait_until(lambda: service.store.breaker_open, 30, "the database breaker to open")
    acked_during_outage = service.worker.stats.acked_messages

    async with api_client(service, api_key) as api:  # the key was made before the outage
        started_at = time.monotonic()
        readings = await api.get(f"/api/v1/gateways/{GW}/readings")
        fast = time.monotonic() - started_at < 1.0
        ready = await api.get("/readyz")
        assert readings.status_code == 503
        assert int(readings.headers["Retry-After"]) >= 1
        assert "storage unavailable" in readings.json()["detail"]
        assert fast, "an open breaker must answer at once"
        assert ready.status_code == 503
        assert "db" in ready.json()["detail"]
        assert service.worker.stats.acked_messages == acked_during_outage
        assert not any((GW, s) in edge.acked for s in range(11, 111))

        outage.end()
        edge.wait_acked(GW, range(11, 111), timeout=30)
        assert service.store.count_readings(GW) == 110
        wait_until(lambda: not service.store.breaker_open, 10, "breaker to close")
        assert (await api.get("/readyz")).status_code == 200
