"""``GET/PATCH /api/v1/devices/{device_id}/shadow``: a device's shadow over REST.

A registered device ``{gw}.{local}`` maps to the named shadow ``local`` of thing ``gw`` (what the
agent keeps in step). GET answers the document as ``shadow/get/accepted`` would (state with its
delta, metadata, version; 404 while the device has none); PATCH sets desired values (``null``
deletes a key, ``"desired": null`` all of them), optionally guarded by ``version`` (409 with the
current version on a mismatch), and the gateway gets the delta at once or at its next connect.
Reading needs the home's read permission, PATCH its control permission; another home's device
is 404 (``cloud_sync.auth``). Desired keys are the device's settings
(:mod:`protocols.device_shadow`): anything else, or an action the device does not accept, is 422.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cloud_sync.auth import CurrentAccess, CurrentPrincipal
from cloud_sync.errors import BadInput, NotFound
from cloud_sync.ports import Device
from cloud_sync.shadows.service import ShadowService
from protocols import shadow, topics
from protocols.device_shadow import desired_actions
from protocols.errors import InvalidMessage

__all__ = ["register_shadows"]



class ShadowPatch(BaseModel):
    desired: dict[str, Any] | None = Field(
        description="device settings to reach, e.g. {\"state\": \"on\"}; null deletes")
    version: int | None = Field(default=None, ge=0,
                                description="apply only if the shadow is at this version")


def _shadow_name(device: Device) -> str:
    if not topics.is_shadow_name(device.local_id):
        raise BadInput(f"device {device.id!r} has no shadow: its local id "
                       f"{device.local_id!r} is not a valid shadow name (A-Z a-z 0-9 : _ -)")
    return device.local_id


def _check_desired(device: Device, desired: dict[str, Any] | None) -> None:
    if device.kind != "actuator":
        raise BadInput(f"device {device.id!r} is a {device.kind}: only actuators have desired "
                       "state")
    wanted = {k: v for k, v in (desired or {}).items() if v is not None}
    try:
        actions = desired_actions(wanted)
    except InvalidMessage as exc:
        raise BadInput(str(exc)) from exc
    for item in actions:
        if device.capabilities and item.action.value not in device.capabilities:
            raise BadInput(f"desired.{item.key}: device {device.id!r} does not accept "
                           f"{item.action.value} (capabilities: "
                           f"{', '.join(device.capabilities)})")


def _error(exc: shadow.ShadowError, current: shadow.ShadowDocument | None) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.message, "code": exc.code}
    if current is not None and exc.code == 409:
        body["version"] = current.version
    status = 422 if exc.code == 400 else exc.code
    return JSONResponse(body, status_code=status)


def register_shadows(app: FastAPI, service: ShadowService) -> None:
    @app.get("/api/v1/devices/{device_id}/shadow", tags=["shadows"])
    def get_shadow(principal: CurrentPrincipal, access: CurrentAccess,
                   device_id: str) -> dict[str, Any]:
        device = access.require_device(principal, device_id)
        name = _shadow_name(device)
        doc = service.store.get(device.gateway_id, name)
        if not doc.exists:
            raise NotFound(f"device {device_id!r} has no shadow yet")
        return shadow.get_payload(doc, _now_s(), None, device.gateway_id, name)

    @app.patch("/api/v1/devices/{device_id}/shadow", tags=["shadows"], response_model=None)
    def patch_shadow(principal: CurrentPrincipal, access: CurrentAccess, device_id: str,
                     body: ShadowPatch) -> dict[str, Any] | JSONResponse:
        device = access.require_device(principal, device_id, "control")
        name = _shadow_name(device)
        _check_desired(device, body.desired)
        try:
            doc = service.update_desired(device.gateway_id, name, body.desired, body.version)
        except shadow.ShadowError as exc:
            return _error(exc, service.store.get(device.gateway_id, name))
        return shadow.get_payload(doc, _now_s(), None, device.gateway_id, name)


def _now_s() -> int:
    return int(time.time())
