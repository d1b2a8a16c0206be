"""The registry over REST: homes, their members, gateways and devices.

Every route checks the caller first (``cloud_sync.auth``): a home the caller may not see answers
404 like one that does not exist. Creating homes and users is for operators (the admin CLI does
the same without the API); owners manage their members; installers and owners add gateways and
devices. Registration is idempotent (200 for what existed, 201 for what is new).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cloud_sync.auth import CurrentAccess, CurrentPrincipal, Role, require_operator
from cloud_sync.auth.credentials import hash_password
from cloud_sync.db.auth_store import SqlAuthStore
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.errors import BadInput, NotFound
from cloud_sync.ports import Device
from cloud_sync.registry_rules import (
    check_device,
    check_email,
    check_gateway_id,
    check_local_id,
    check_name,
    check_password,
    check_timezone,
)


@dataclass
class RegistryApiContext:
    registry: SqlRegistryStore
    auth: SqlAuthStore
    now_ms: Callable[[], int]


class HomeIn(BaseModel):
    name: str
    timezone: str = "UTC"
    owner_email: str | None = None  # an existing user who becomes its owner


class HomePatch(BaseModel):
    name: str | None = None
    timezone: str | None = None


class MemberIn(BaseModel):
    email: str
    role: Role


class GatewayIn(BaseModel):
    gateway_id: str
    name: str | None = None


class DeviceIn(BaseModel):
    local_id: str = Field(description="the id in the gateway's agent.toml (meter or actuator)")
    kind: str = Field(description="meter | actuator")
    role: str | None = Field(default=None, description="meters: grid | pv | load")
    capabilities: list[str] = Field(default_factory=list, description="actuators: actions")
    model: str | None = None
    name: str | None = None


class UserIn(BaseModel):
    email: str
    password: str | None = None
    name: str | None = None
    operator: bool = False


def device_json(device: Device) -> dict[str, Any]:
    return asdict(device)


def _created(body: dict[str, Any], created: bool) -> JSONResponse:
    return JSONResponse(body, status_code=201 if created else 200)


def register_registry(app: FastAPI, ctx: RegistryApiContext) -> None:
    _register_homes(app, ctx)
    _register_members(app, ctx)
    _register_gateways(app, ctx)
    _register_devices(app, ctx)


def _register_homes(app: FastAPI, ctx: RegistryApiContext) -> None:
    @app.get("/api/v1/homes", tags=["registry"])
    def list_homes(principal: CurrentPrincipal) -> dict[str, Any]:
        homes = ctx.registry.homes(None if principal.operator else principal.home_ids)
        return {"items": [asdict(h) for h in homes]}

    @app.post("/api/v1/homes", status_code=201, tags=["registry"])
    def create_home(principal: CurrentPrincipal, body: HomeIn) -> dict[str, Any]:
        require_operator(principal)
        owner = None
        if body.owner_email is not None:
            owner = ctx.auth.user_by_email(check_email(body.owner_email))
            if owner is None:
                raise BadInput(f"owner_email: no user {body.owner_email!r} (create it first)")
        home = ctx.registry.create_home(check_name("name", body.name),
                                        check_timezone(body.timezone), ctx.now_ms())
        if owner is not None:
            ctx.auth.set_membership(owner.id, home.id, Role.OWNER, ctx.now_ms())
        return asdict(home)

    @app.get("/api/v1/homes/{home_id}", tags=["registry"])
    def get_home(principal: CurrentPrincipal, access: CurrentAccess,
                 home_id: str) -> dict[str, Any]:
        return asdict(access.require_home(principal, home_id))

    @app.patch("/api/v1/homes/{home_id}", tags=["registry"])
    def patch_home(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                   body: HomePatch) -> dict[str, Any]:
        access.require_home(principal, home_id, "manage")
        home = ctx.registry.update_home(
            home_id, name=None if body.name is None else check_name("name", body.name),
            timezone=None if body.timezone is None else check_timezone(body.timezone))
        return asdict(home)

    @app.delete("/api/v1/homes/{home_id}", status_code=204, tags=["registry"])
    def delete_home(principal: CurrentPrincipal, access: CurrentAccess, home_id: str) -> None:
        access.require_home(principal, home_id, "manage")
        ctx.registry.delete_home(home_id, ctx.now_ms())


def _register_members(app: FastAPI, ctx: RegistryApiContext) -> None:
    @app.get("/api/v1/homes/{home_id}/members", tags=["registry"])
    def list_members(principal: CurrentPrincipal, access: CurrentAccess,
                     home_id: str) -> dict[str, Any]:
        access.require_home(principal, home_id, "manage")
        return {"items": [{"user_id": m.user_id, "email": m.email, "role": m.role.value}
                          for m in ctx.auth.members(home_id)]}

    @app.post("/api/v1/homes/{home_id}/members", tags=["registry"])
    def add_member(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                   body: MemberIn) -> JSONResponse:
        access.require_home(principal, home_id, "manage")
        user = ctx.auth.user_by_email(check_email(body.email))
        if user is None:
            raise BadInput(f"email: no user {body.email!r} (an operator creates users)")
        created = ctx.auth.set_membership(user.id, home_id, body.role, ctx.now_ms())
        return _created({"user_id": user.id, "email": user.email, "role": body.role.value},
                        created)

    @app.delete("/api/v1/homes/{home_id}/members/{user_id}", status_code=204,
                tags=["registry"])
    def remove_member(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                      user_id: str) -> None:
        access.require_home(principal, home_id, "manage")
        if not ctx.auth.remove_membership(user_id, home_id):
            raise NotFound(f"user {user_id!r} is not a member of home {home_id!r}")

    @app.post("/api/v1/users", status_code=201, tags=["registry"])
    def create_user(principal: CurrentPrincipal, body: UserIn) -> dict[str, Any]:
        require_operator(principal)
        hashed = None if body.password is None else hash_password(check_password(body.password))
        user = ctx.auth.create_user(check_email(body.email), hashed, ctx.now_ms(),
                                    name=body.name, operator=body.operator)
        return asdict(user)


def _register_gateways(app: FastAPI, ctx: RegistryApiContext) -> None:
    @app.get("/api/v1/homes/{home_id}/gateways", tags=["registry"])
    def list_gateways(principal: CurrentPrincipal, access: CurrentAccess,
                      home_id: str) -> dict[str, Any]:
        access.require_home(principal, home_id)
        return {"items": [asdict(g) for g in ctx.registry.gateways(home_id)]}

    @app.post("/api/v1/homes/{home_id}/gateways", tags=["registry"])
    def add_gateway(principal: CurrentPrincipal, access: CurrentAccess, home_id: str,
                    body: GatewayIn) -> JSONResponse:
        access.require_home(principal, home_id, "install")
        gateway_id = check_gateway_id(body.gateway_id)
        created = ctx.registry.add_gateway(
            gateway_id, ctx.now_ms(), home_id=home_id,
            name=None if body.name is None else check_name("name", body.name))
        gateway = ctx.registry.gateway(gateway_id)
        assert gateway is not None
        return _created(asdict(gateway), created)

    @app.get("/api/v1/gateways/{gateway_id}", tags=["registry"])
    def get_gateway(principal: CurrentPrincipal, access: CurrentAccess,
                    gateway_id: str) -> dict[str, Any]:
        return asdict(access.require_gateway(principal, gateway_id))

    @app.delete("/api/v1/gateways/{gateway_id}", status_code=204, tags=["registry"])
    def delete_gateway(principal: CurrentPrincipal, access: CurrentAccess,
                       gateway_id: str) -> None:
        access.require_gateway(principal, gateway_id, "install")
        ctx.registry.delete_gateway(gateway_id, ctx.now_ms())


def _register_devices(app: FastAPI, ctx: RegistryApiContext) -> None:
    @app.get("/api/v1/homes/{home_id}/devices", tags=["registry"])
    def list_devices(principal: CurrentPrincipal, access: CurrentAccess,
                     home_id: str) -> dict[str, Any]:
        access.require_home(principal, home_id)
        return {"items": [device_json(d) for d in ctx.registry.devices(home_id=home_id)]}

    @app.post("/api/v1/gateways/{gateway_id}/devices", tags=["registry"])
    def add_device(principal: CurrentPrincipal, access: CurrentAccess, gateway_id: str,
                   body: DeviceIn) -> JSONResponse:
        access.require_gateway(principal, gateway_id, "install")  # unassigned: operators only
        check_device(body.kind, body.role, body.capabilities)
        device, created = ctx.registry.add_device(
            gateway_id, check_local_id(body.local_id), ctx.now_ms(), kind=body.kind,
            capabilities=body.capabilities, role=body.role, model=body.model,
            name=None if body.name is None else check_name("name", body.name))
        return _created(device_json(device), created)

    @app.get("/api/v1/devices/{device_id}", tags=["registry"])
    def get_device(principal: CurrentPrincipal, access: CurrentAccess,
                   device_id: str) -> dict[str, Any]:
        return device_json(access.require_device(principal, device_id))

    @app.delete("/api/v1/devices/{device_id}", status_code=204, tags=["registry"])
    def delete_device(principal: CurrentPrincipal, access: CurrentAccess,
                      device_id: str) -> None:
        access.require_device(principal, device_id, "install")
        ctx.registry.delete_device(device_id, ctx.now_ms())
