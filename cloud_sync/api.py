"""The REST API (FastAPI): readings, latest values, dead letters, and the health probes.

Every ``/api/v1`` route but log-in needs a credential (``cloud_sync.auth``): readings are
scoped to the caller's homes (another home's gateway answers 404), dead letters and stats are
for operators. Health probes and ``/metrics`` stay open for orchestrators and scrapers: bind
the service to a private network, or put the scrape behind the proxy's auth.

Handlers are plain ``def`` so FastAPI runs them in its thread pool: every database call is
bounded by the engine's timeouts and the store's circuit breaker, and ``StorageUnavailable``
becomes ``503`` with ``Retry-After``. Every error body is ``{"detail": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from cloud_sync.auth import AuthContext, CurrentAccess, CurrentPrincipal, require_operator
from cloud_sync.command_api import CommandApiContext, register_commands
from cloud_sync.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    ReplayRejected,
    StorageUnavailable,
)
from cloud_sync.health import HealthChecks, register_health
from cloud_sync.metrics import CloudMetrics, mount_metrics
from cloud_sync.ports import DeadLetter, ReadingsQuery, StoredReading, TelemetryQueries
from cloud_sync.replay import replay_dead_letter

MAX_PAGE = 10_000


class QueryStore(TelemetryQueries, Protocol):
    def ping(self, timeout_s: float) -> None: ...


@dataclass
class ApiContext:
    """What the app needs, built by ``bootstrap``; tests build it with real or fake parts."""

    store: QueryStore
    health: HealthChecks
    now_ms: Callable[[], int]
    auth: AuthContext
    publish: Callable[[str, bytes], None] | None = None
    stats: Callable[[], dict[str, int]] | None = None
    commands: CommandApiContext | None = None
    metrics: CloudMetrics | None = None
    # Further route groups (shadows, registry, analytics, firmware), each registering its
    # endpoints on the app: ``register(app)``.
    routes: Sequence[Callable[[FastAPI], None]] = ()


def _encode_cursor(*parts: int) -> str:
    return base64.urlsafe_b64encode(":".join(map(str, parts)).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, count: int) -> tuple[int, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = tuple(int(p) for p in raw.split(":"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        parts = ()
    if len(parts) != count:
        raise HTTPException(400, "cursor: not a cursor returned by this API (use next_cursor)")
    return parts


def _reading_json(r: StoredReading) -> dict[str, Any]:
    out = asdict(r)
    del out["gateway_id"]
    return out


def _dead_letter_json(d: DeadLetter) -> dict[str, Any]:
    try:
        text: str | None = d.payload.decode()
    except UnicodeDecodeError:
        text = None
    return {"id": d.id, "received_at": d.received_at, "topic": d.topic, "reason": d.reason,
            "replayed_at": d.replayed_at, "payload_text": text,
            "payload_base64": base64.b64encode(d.payload).decode()}


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the app; it owns no connections (``bootstrap`` starts and stops them)."""
    app = FastAPI(title="homewatt cloud", version="1")
    app.state.auth = ctx.auth
    _register_errors(app)
    register_health(app, ctx.health)
    _register_readings(app, ctx)
    _register_dead_letters(app, ctx)
    if ctx.commands is not None:
        register_commands(app, ctx.commands)
    if ctx.metrics is not None:
        mount_metrics(app, ctx.metrics)
    for register in ctx.routes:
        register(app)

    @app.get("/api/v1/ingestion/stats", tags=["operations"])
    def ingestion_stats(principal: CurrentPrincipal) -> dict[str, int]:
        require_operator(principal)
        return ctx.stats() if ctx.stats else {}

    return app


def _register_errors(app: FastAPI) -> None:
    @app.exception_handler(StorageUnavailable)
    async def storage_down(_req: Request, exc: StorageUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"storage unavailable: {exc}"}, status_code=503,
                            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})

    @app.exception_handler(NotFound)
    async def not_found(_req: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Forbidden)
    async def forbidden(_req: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(Conflict)
    async def conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(BadInput)
    async def bad_input(_req: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ReplayRejected)
    async def rejected(_req: Request, exc: ReplayRejected) -> JSONResponse:
        return JSONResponse({"detail": f"payload still rejected: {exc.reason}"}, status_code=422)


def _register_readings(app: FastAPI, ctx: ApiContext) -> None:
    @app.get("/api/v1/gateways/{gateway_id}/readings", tags=["telemetry"])
    def get_readings(  # noqa: PLR0917 - one parameter per query-string field
        principal: CurrentPrincipal,
        access: CurrentAccess,
        gateway_id: str,
        meter: str | None = None,
        channel: str | None = None,
        from_ms: Annotated[int | None, Query(alias="from", description="epoch ms, incl.")] = None,
        to_ms: Annotated[int | None, Query(alias="to", description="epoch ms, excl.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        access.require_gateway(principal, gateway_id)
        after = _decode_cursor(cursor, 2) if cursor else None
        rows = ctx.store.readings(ReadingsQuery(
            gateway_id, meter, channel, from_ms, to_ms,
            (after[0], after[1]) if after else None, limit))
        next_cursor = _encode_cursor(rows[-1].ts, rows[-1].seq) if len(rows) == limit else None
        return {"items": [_reading_json(r) for r in rows], "next_cursor": next_cursor}

    @app.get("/api/v1/gateways/{gateway_id}/latest", tags=["telemetry"])
    def get_latest(principal: CurrentPrincipal, access: CurrentAccess,
                   gateway_id: str) -> dict[str, Any]:
        access.require_gateway(principal, gateway_id)
        return {"items": [_reading_json(r) for r in ctx.store.latest(gateway_id)]}


def _register_dead_letters(app: FastAPI, ctx: ApiContext) -> None:
    @app.get("/api/v1/dead-letters", tags=["operations"])
    def list_dead_letters(principal: CurrentPrincipal,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                          cursor: str | None = None) -> dict[str, Any]:
        require_operator(principal)
        after = _decode_cursor(cursor, 1)[0] if cursor else None
        rows = ctx.store.dead_letters(after, limit)
        next_cursor = _encode_cursor(rows[-1].id) if len(rows) == limit else None
        return {"items": [_dead_letter_json(d) for d in rows], "next_cursor": next_cursor}

    @app.post("/api/v1/dead-letters/{dead_letter_id}/replay", tags=["operations"])
    def replay(principal: CurrentPrincipal, dead_letter_id: int) -> dict[str, Any]:
        require_operator(principal)
        result = replay_dead_letter(ctx.store, dead_letter_id, ctx.now_ms(), ctx.publish)
        return asdict(result)
