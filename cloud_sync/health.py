"""Kubernetes-style probes: ``/livez``, ``/readyz``, ``/startupz``.

``/readyz`` answers 503 naming the failed check when the database does not answer within
``db_timeout_s`` (or its breaker is open) or the broker connection is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from cloud_sync.errors import StorageUnavailable


@dataclass
class HealthChecks:
    ping_db: Callable[[float], None]
    broker_connected: Callable[[], bool]
    migrated: Callable[[], bool]
    worker_started: Callable[[], bool]
    db_timeout_s: float = 1.0


async def _db_check(checks: HealthChecks) -> str:
    try:
        await asyncio.wait_for(asyncio.to_thread(checks.ping_db, checks.db_timeout_s),
                               timeout=checks.db_timeout_s)
    except TimeoutError:
        return f"no answer within {checks.db_timeout_s}s"
    except StorageUnavailable as exc:
        return str(exc)
    return "ok"


def register_health(app: FastAPI, checks: HealthChecks) -> None:
    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        results = {"db": await _db_check(checks),
                   "broker": "ok" if checks.broker_connected() else "not connected"}
        return _verdict(results, "ready")

    @app.get("/startupz")
    async def startupz() -> JSONResponse:
        results = {"migrations": "ok" if checks.migrated() else "not done",
                   "worker": "ok" if checks.worker_started() else "not started"}
        return _verdict(results, "started")


def _verdict(results: dict[str, str], good: str) -> JSONResponse:
    failed = {name: result for name, result in results.items() if result != "ok"}
    if failed:
        detail = "; ".join(f"{name}: {result}" for name, result in failed.items())
        return JSONResponse({"detail": detail, "checks": results}, status_code=503)
    return JSONResponse({"status": good, "checks": results})
