"""Firmware REST API: bundles (upload, Range download), rollouts, blocklist, groups.

Operator-only endpoints depend on ``operator`` (the auth package's ``require_operator`` over
the current principal); a device downloads a payload with the token its job document carries
(like an S3 presigned URL), or an operator with their credentials. Downloads support ``Range``
and ``If-Range``; the strong ``ETag`` is the payload's SHA-256, the same on every replica.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from starlette.concurrency import run_in_threadpool

from cloud_sync.auth import CurrentPrincipal, Principal, require_operator
from cloud_sync.auth.deps import TOKEN_URL, CurrentAuth, current_principal
from cloud_sync.db.firmware_store import FirmwareConflict
from cloud_sync.errors import NotFound
from cloud_sync.firmware.models import BlockIn, GroupIn, RolloutIn
from cloud_sync.firmware.service import FirmwareService, PayloadRejected

__all__ = ["FirmwareApiContext", "register_firmware"]

PREFIX = "/api/v1/firmware"
UPLOAD_CHUNK = 1024 * 1024


_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


def require_fleet_operator(principal: CurrentPrincipal) -> Principal:
    """Fleet endpoints: 401 without credentials, 403 for a non-operator."""
    require_operator(principal)
    return principal


def optional_operator(ctx: CurrentAuth,
                      bearer: Annotated[str | None, Security(_bearer)] = None,
                      api_key: Annotated[str | None, Security(_api_key)] = None) -> bool:
    """True for an operator's credentials, False without any (a device's token decides);
    bad credentials are still a 401."""
    if not (bearer or api_key):
        return False
    return current_principal(ctx, bearer, api_key).operator


@dataclass
class FirmwareApiContext:
    service: FirmwareService
    # FastAPI dependency: returns for an operator, raises 401/403 otherwise
    operator: Callable[..., Any] = require_fleet_operator
    # FastAPI dependency: True when the request carries operator credentials
    is_operator: Callable[..., Any] = optional_operator


def register_firmware(app: FastAPI, ctx: FirmwareApiContext) -> None:
    _errors(app)
    _downloads(app, ctx)
    _bundles(app, ctx)
    _rollouts(app, ctx)
    _fleet(app, ctx)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(NotFound)  # also in the main app; this router stands alone too
    async def not_found(_req: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(FirmwareConflict)
    async def conflict(_req: Request, exc: FirmwareConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(PayloadRejected)
    async def rejected(_req: Request, exc: PayloadRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "reason": exc.reason}, status_code=422)


def _downloads(app: FastAPI, ctx: FirmwareApiContext) -> None:
    @app.get(PREFIX + "/bundles/{bundle_id}/payload", response_model=None)
    def download(bundle_id: str, token: str | None = None,
                 operator: bool = Depends(ctx.is_operator),  # ctx is per app: no Annotated
                 ) -> Response:
        """Range and If-Range aware; 404 for an unknown bundle or a token that does not
        belong to one of its rollouts (existence never leaks)."""
        service = ctx.service
        bundle = service.bundles.bundle(bundle_id)
        allowed = operator or (token is not None and bundle is not None
                               and service.rollouts.token_allows(bundle_id, token))
        if bundle is None or not allowed or bundle.status != "ready":
            raise NotFound(f"bundle {bundle_id!r} payload not found")
        return FileResponse(service.payload_path(bundle), media_type="application/octet-stream",
                            headers={"etag": f'"{bundle.sha256}"',
                                     "cache-control": "private, max-age=3600"})


def _bundles(app: FastAPI, ctx: FirmwareApiContext) -> None:
    guard = [Depends(ctx.operator)]

    @app.post(PREFIX + "/bundles", status_code=201, dependencies=guard)
    async def upload_manifest(request: Request) -> JSONResponse:
        """Body: the signed manifest envelope from ``homewatt-fw sign``. 201 new, 200 same
        again, 409 another bundle under that name and version, 422 devices would refuse it."""
        raw = await request.body()
        bundle, created = ctx.service.add_manifest(raw)
        return JSONResponse(_bundle_json(ctx, bundle.bundle_id),
                            status_code=201 if created else 200)

    @app.put(PREFIX + "/bundles/{bundle_id}/payload", dependencies=guard)
    async def upload_payload(bundle_id: str, request: Request) -> dict[str, Any]:
        """Raw body streamed to disk; refused (422) unless exactly the signed bytes."""
        bundle = ctx.service.require_bundle(bundle_id)
        ctx.service.payload_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=ctx.service.payload_dir) as spool:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > bundle.size:  # refused before a byte past the signed length
                    raise PayloadRejected("payload_length", f"upload exceeds the signed "
                                          f"{bundle.size} bytes")
                spool.write(chunk)
            spool.seek(0)
            await run_in_threadpool(ctx.service.store_payload, bundle_id,
                                    iter(lambda: spool.read(UPLOAD_CHUNK), b""))
        return _bundle_json(ctx, bundle_id)

    @app.get(PREFIX + "/bundles", dependencies=guard)
    def list_bundles() -> dict[str, Any]:
        return {"items": [b.public() for b in ctx.service.bundles.bundles()]}

    @app.get(PREFIX + "/bundles/{bundle_id}", dependencies=guard)
    def get_bundle(bundle_id: str) -> dict[str, Any]:
        return _bundle_json(ctx, bundle_id)


def _bundle_json(ctx: FirmwareApiContext, bundle_id: str) -> dict[str, Any]:
    return ctx.service.require_bundle(bundle_id).public()


def _rollouts(app: FastAPI, ctx: FirmwareApiContext) -> None:
    guard = [Depends(ctx.operator)]
    rollouts = ctx.service.rollouts

    @app.post(PREFIX + "/rollouts", status_code=201, dependencies=guard)
    def create(body: RolloutIn) -> dict[str, Any]:
        return rollouts.get(ctx.service.create_rollout(body))

    @app.get(PREFIX + "/rollouts/{rollout_id}", dependencies=guard)
    def get(rollout_id: str) -> dict[str, Any]:
        return rollouts.get(rollout_id)

    transitions = {"pause": ("paused", ("active",)), "resume": ("active", ("paused",)),
                   "cancel": ("canceled", ("active", "paused"))}

    @app.post(PREFIX + "/rollouts/{rollout_id}/{action}", dependencies=guard)
    def act(rollout_id: str, action: str) -> dict[str, Any]:
        if action not in transitions:
            raise NotFound(f"no action {action!r}; use pause, resume or cancel")
        status, allowed = transitions[action]
        previous = rollouts.set_status(rollout_id, status, ctx.service.now_ms(),
                                       f"{action} by operator", allowed_from=allowed)
        if previous not in allowed and previous != status:
            raise FirmwareConflict(f"rollout {rollout_id} is {previous}; cannot {action} it")
        ctx.service.wake_jobs()
        return rollouts.get(rollout_id)


def _fleet(app: FastAPI, ctx: FirmwareApiContext) -> None:
    guard = [Depends(ctx.operator)]
    store = ctx.service.bundles

    @app.get(PREFIX + "/blocklist", dependencies=guard)
    def blocklist() -> dict[str, Any]:
        return {"items": [{"version": v, "reason": r} for v, r in store.blocklist().items()]}

    @app.put(PREFIX + "/blocklist/{version}", dependencies=guard)
    def block(version: str, body: BlockIn) -> dict[str, Any]:
        """Devices refuse it, the cloud never offers it; its live rollouts are canceled."""
        return {"version": version, "canceled_rollouts": ctx.service.block(version,
                                                                            body.reason)}

    @app.delete(PREFIX + "/blocklist/{version}", status_code=204, dependencies=guard)
    def unblock(version: str) -> Response:
        if not store.unblock(version):
            raise NotFound(f"version {version!r} is not blocklisted")
        return Response(status_code=204)

    @app.put(PREFIX + "/groups/{name}", dependencies=guard)
    def set_group(name: str, body: GroupIn) -> dict[str, Any]:
        unknown = store.set_group(name, body.gateways, ctx.service.now_ms())
        if unknown:
            raise FirmwareConflict(f"gateways: not registered: {', '.join(unknown[:10])}")
        return {"name": name, "gateways": store.group(name)}

    @app.get(PREFIX + "/groups/{name}", dependencies=guard)
    def get_group(name: str) -> dict[str, Any]:
        return {"name": name, "gateways": store.group(name)}

    @app.get(PREFIX + "/gateways", dependencies=guard)
    def gateway_versions(blocklisted: bool | None = None) -> dict[str, Any]:
        """What each gateway reported it runs; ``blocklisted=true``: those on a known-bad
        version (finding 6.6: roll them forward)."""
        rows = store.gateway_versions()
        if blocklisted is not None:
            rows = [r for r in rows if r["blocklisted"] == blocklisted]
        return {"items": rows}




