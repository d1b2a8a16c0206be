"""Health probes: liveness fails only after readiness failed continuously longer than the
window (injected clock); a non-critical dependency down means 200 "degraded", not 503."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from cloud_sync.errors import StorageUnavailable
from cloud_sync.health import HealthChecks, register_health
from edge_agent.health_server import AgentHealthServer, Probe
from observability.health import LivenessWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Deps:
    def __init__(self) -> None:
        self.db_up = True
        self.broker_up = True
        self.dead_letters = "ok"

    def ping_db(self, _timeout_s: float) -> None:
        if not self.db_up:
            raise StorageUnavailable("database error: connection refused")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deps() -> Deps:
    return Deps()


@pytest.fixture
async def api(clock: Clock, deps: Deps) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    register_health(app, HealthChecks(
        ping_db=deps.ping_db, broker_connected=lambda: deps.broker_up, migrated=lambda: True,
        worker_started=lambda: True, optional={"dead_letters": lambda: deps.dead_letters},
        liveness=LivenessWindow(120.0, clock)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield client


async def test_livez_fails_only_after_readiness_failed_longer_than_the_window(
        api: httpx.AsyncClient, clock: Clock, deps: Deps) -> None:
    deps.db_up = False
    assert (await api.get("/readyz")).status_code == 503
    clock.now += 119
    assert (await api.get("/livez")).status_code == 200
    clock.now += 2
    live = await api.get("/livez")
    assert live.status_code == 503
    assert "restart" in live.json()["detail"]


async def test_one_success_inside_the_window_restarts_the_count(
        api: httpx.AsyncClient, clock: Clock, deps: Deps) -> None:
    deps.broker_up = False
    await api.get("/readyz")
    clock.now += 100
    deps.broker_up = True
    assert (await api.get("/readyz")).status_code == 200
    deps.broker_up = False
    clock.now += 100
    assert (await api.get("/livez")).status_code == 200  # failing for 0 s, not 200 s
    clock.now += 121
    assert (await api.get("/livez")).status_code == 503
    deps.broker_up = True
    assert (await api.get("/livez")).status_code == 200


async def test_non_critical_dependency_down_is_ready_but_degraded(
        api: httpx.AsyncClient, deps: Deps) -> None:
    deps.dead_letters = "1500 unreplayed dead letters (more than 1000)"
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["degraded"] == ["dead_letters"]
    assert ready.json()["checks"] == {"db": "ok", "broker": "ok"}


async def test_critical_failure_wins_over_degraded(api: httpx.AsyncClient, deps: Deps) -> None:
    deps.dead_letters = "too many"
    deps.db_up = False
    ready = await api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["detail"] == "db: database error: connection refused"


async def test_agent_livez_fails_after_the_window_on_an_injected_clock(clock: Clock) -> None:
    probe = Probe({"buffer": "ok", "tasks": "stopped: inbound"}, {"uplink": "ok"})

    async def run() -> Probe:
        return probe
    server = AgentHealthServer(run, lambda: b"", liveness=LivenessWindow(120.0, clock))
    assert (await server.answer("GET", "/readyz"))[0] == 503
    clock.now += 120
    assert (await server.answer("GET", "/livez"))[0] == 200
    clock.now += 1
    assert (await server.answer("GET", "/livez"))[0] == 503
    probe = Probe({"buffer": "ok", "tasks": "ok"}, {"uplink": "not connected (buffering)"})
    status, body, _ = await server.answer("GET", "/readyz")
    assert (status, b'"degraded"' in body) == (200, True)
    assert (await server.answer("GET", "/livez"))[0] == 200
    assert (await server.answer("POST", "/livez"))[0] == 405
