"""``POST/GET /api/v1/devices/{device_id}/commands``: the command API consumers code against.

POST needs an ``Idempotency-Key`` header (400 without) and a caller allowed to control the
device's home; GET one allowed to read it (``cloud_sync.auth``; another home's device is 404, as
if it did not exist). A new command answers 201 with the
status body and ``Location``; a retry with the same key and the same body answers 200 with the
original command; the same key with another body is 422. Unknown device 404; an action the
device does not support or bad params 422 naming the field; rate limit 429 and full gateway
queue 503, both with ``Retry-After`` (safety priority bypasses both). A timeout never means
the command failed: clients poll ``GET .../commands/{command_id}`` until a final status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Protocol

from fastapi import Body, FastAPI, Header, Request
from fastapi.responses import JSONResponse

from cloud_sync.auth import CurrentAccess, CurrentPrincipal, require_operator
from cloud_sync.command_rules import (
    CommandRequest,
    CommandRequestError,
    check_capabilities,
    check_idempotency_key,
    parse_request,
)
from cloud_sync.db.commands_store import CommandLimits, CommandRefused
from cloud_sync.errors import NotFound
from cloud_sync.ports import Device, StoredCommand
from observability.tracing import current_traceparent, span
from protocols.trace import trace_id_of


class CommandStore(Protocol):
    def create_command(self, device: Device, idempotency_key: str, request: CommandRequest,
                       now_ms: int, limits: CommandLimits, *, traceparent: str | None = None,
                       ) -> tuple[StoredCommand, bool]: ...

    def command(self, device_id: str, command_id: str) -> StoredCommand | None: ...


@dataclass
class CommandApiContext:
    store: CommandStore
    now_ms: Callable[[], int]
    limits: CommandLimits
    default_ttl_s: int = 60
    wake_dispatcher: Callable[[], None] = lambda: None
    stats: Callable[[], dict[str, int]] | None = None


def command_json(command: StoredCommand) -> dict[str, Any]:
    """The status body; ``trace_id`` (32 hex) names the command's trace, ``None`` untraced."""
    out = asdict(command)
    del out["request_hash"]
    out["trace_id"] = trace_id_of(out.pop("traceparent"))
    return out


def _location(command: StoredCommand) -> str:
    return f"/api/v1/devices/{command.device_id}/commands/{command.command_id}"


def register_commands(app: FastAPI, ctx: CommandApiContext) -> None:
    _register_errors(app)

    @app.post("/api/v1/devices/{device_id}/commands", status_code=201, tags=["commands"])
    def create_command(  # noqa: PLR0917 - dependencies, path, body and two headers
        principal: CurrentPrincipal,
        access: CurrentAccess,
        device_id: str,
        body: Annotated[Any, Body()] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
        traceparent: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        # One span per request, continuing the caller's W3C traceparent header if it sent one.
        with span("POST /api/v1/devices/{device_id}/commands", traceparent=traceparent,
                  attributes={"http.request.method": "POST", "device.id": device_id}):
            key = check_idempotency_key(idempotency_key)
            request = parse_request(body, ctx.default_ttl_s)
            device = access.require_device(principal, device_id, "control")
            return _create(ctx, device, key, request)

    @app.get("/api/v1/commands/stats", tags=["commands"])
    def command_stats(principal: CurrentPrincipal) -> dict[str, int]:
        """Dispatcher and ack counters of this replica (never reset); operators only."""
        require_operator(principal)
        return ctx.stats() if ctx.stats else {}

    @app.get("/api/v1/devices/{device_id}/commands/{command_id}", tags=["commands"])
    def get_command(principal: CurrentPrincipal, access: CurrentAccess, device_id: str,
                    command_id: str) -> dict[str, Any]:
        access.require_device(principal, device_id)
        command = ctx.store.command(device_id, command_id)
        if command is None:
            raise NotFound(f"command {command_id!r} of device {device_id!r} does not exist")
        return command_json(command)


def _create(ctx: CommandApiContext, device: Device, key: str,
            request: CommandRequest) -> JSONResponse:
    check_capabilities(request, device.id, device.capabilities)
    command, created = ctx.store.create_command(device, key, request, ctx.now_ms(),
                                                 ctx.limits, traceparent=current_traceparent())
    if created:
        ctx.wake_dispatcher()
    return JSONResponse(command_json(command), status_code=201 if created else 200,
                        headers={"Location": _location(command)})


def _register_errors(app: FastAPI) -> None:
    @app.exception_handler(CommandRequestError)
    async def bad_request(_req: Request, exc: CommandRequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    @app.exception_handler(CommandRefused)
    async def refused(_req: Request, exc: CommandRefused) -> JSONResponse:
        return JSONResponse({"detail": exc.refusal.message},
                            status_code=exc.refusal.status_code,
                            headers={"Retry-After": str(exc.refusal.retry_after_s)})
