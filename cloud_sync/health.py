"""Kubernetes-style probes: ``/livez``, ``/readyz``, ``/startupz``.

``/readyz`` answers 503 naming the failed check when a critical dependency fails: the
database does not answer within ``db_timeout_s`` (or its breaker is open) or the broker
connection is down. Non-critical checks (``optional``: e.g. the dead-letter backlog) never
fail readiness: the answer stays 200 with ``"status": "degraded"`` and ``"degraded"`` naming
them; their results are under ``"optional"``, the critical ones under ``"checks"``.

``/livez`` answers 503 once readiness has failed continuously for longer than
``liveness_window_s`` (default 2 min), so an orchestrator restarts a wedged process; each
``/livez`` evaluates the critical checks itself, so it works even if nobody calls ``/readyz``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from cloud_sync.errors import StorageUnavailable
from observability.health import LivenessWindow


@dataclass
class HealthChecks:
    ping_db: Callable[[float], None]
    broker_connected: Callable[[], bool]
    migrated: Callable[[], bool]
    worker_started: Callable[[], bool]
    db_timeout_s: float = 1.0
    # name -> check returning "ok" or what is wrong; run in a thread, bounded by db_timeout_s
    optional: dict[str, Callable[[], str]] = field(default_factory=dict)
    liveness: LivenessWindow = field(default_factory=lambda: LivenessWindow(120.0))


async def _db_check(checks: HealthChecks) -> str:
    try:
        async with asyncio.timeout(checks.db_timeout_s):
            await asyncio.to_thread(checks.ping_db, checks.db_timeout_s)
    except TimeoutError:
        return f"no answer within {checks.db_timeout_s}s"
    except StorageUnavailable as exc:
        return str(exc)
    return "ok"


async def _optional_check(check: Callable[[], str], timeout_s: float) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(check)
    except TimeoutError:
        return f"no answer within {timeout_s}s"
    except StorageUnavailable as exc:
        return f"unknown: {exc}"


async def critical_results(checks: HealthChecks) -> dict[str, str]:
    """Run the critical checks and record the verdict in the liveness window."""
    results = {"db": await _db_check(checks),
               "broker": "ok" if checks.broker_connected() else "not connected"}
    checks.liveness.record(all(r == "ok" for r in results.values()))
    return results


def register_health(app: FastAPI, checks: HealthChecks) -> None:
    @app.get("/livez")
    async def livez() -> JSONResponse:
        await critical_results(checks)
        failing = checks.liveness.failing_for_s()
        if not checks.liveness.alive():
            return JSONResponse(
                {"detail": f"not ready for {failing:.0f}s (more than "
                           f"{checks.liveness.window_s:.0f}s): restart me"}, status_code=503)
        return JSONResponse({"status": "ok", "not_ready_for_s": round(failing, 1)})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        results = await critical_results(checks)
        degraded = {name: await _optional_check(check, checks.db_timeout_s)
                    for name, check in checks.optional.items()}
        return _verdict(results, "ready", degraded)

    @app.get("/startupz")
    async def startupz() -> JSONResponse:
        results = {"migrations": "ok" if checks.migrated() else "not done",
                   "worker": "ok" if checks.worker_started() else "not started"}
        return _verdict(results, "started")


def _verdict(results: dict[str, str], good: str,
             optional: dict[str, str] | None = None) -> JSONResponse:
    """``checks`` holds the critical results; ``optional`` the non-critical ones."""
    extra: dict[str, object] = {"optional": optional} if optional else {}
    failed = {name: result for name, result in results.items() if result != "ok"}
    if failed:
        detail = "; ".join(f"{name}: {result}" for name, result in failed.items())
        return JSONResponse({"detail": detail, "checks": results, **extra}, status_code=503)
    bad = sorted(name for name, result in (optional or {}).items() if result != "ok")
    if bad:
        return JSONResponse({"status": "degraded", "degraded": bad, "checks": results, **extra})
    return JSONResponse({"status": good, "checks": results, **extra})
