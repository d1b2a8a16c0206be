"""Access checks every endpoint makes: look the resource up, then ask the principal.

A caller who may not read a home gets ``NotFound`` for it and for everything in it, exactly as
for an id that does not exist, so another home's ids never leak. A caller who may read but not
do the thing asked gets ``Forbidden``. Fleet-wide endpoints need ``require_operator``.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from cloud_sync.auth.principal import Permission, Principal
from cloud_sync.errors import Forbidden, NotFound
from cloud_sync.ports import Device, Gateway, Home


class RegistryLookups(Protocol):
    def home(self, home_id: str) -> Home | None: ...

    def gateway(self, gateway_id: str) -> Gateway | None: ...

    def device(self, device_id: str) -> Device | None: ...


def _check(principal: Principal, home_id: str | None, permission: Permission,
           missing: str) -> None:
    if not principal.may(home_id, "read"):
        raise NotFound(missing)
    if not principal.may(home_id, permission):
        raise Forbidden(f"your role does not allow '{permission}' here")


def require_operator(principal: Principal) -> None:
    if not principal.operator:
        raise Forbidden("this is a fleet endpoint: it needs the operator role")


class Access:
    def __init__(self, registry: RegistryLookups) -> None:
        self._registry = registry

    def require_home(self, principal: Principal, home_id: str,
                     permission: Permission = "read") -> Home:
        missing = f"home {home_id!r} does not exist"
        if not principal.may(home_id, "read"):  # before the lookup: no timing oracle either
            raise NotFound(missing)
        home = self._registry.home(home_id)
        if home is None:
            raise NotFound(missing)
        _check(principal, home.id, permission, missing)
        return home

    def require_gateway(self, principal: Principal, gateway_id: str,
                        permission: Permission = "read") -> Gateway:
        return _found(principal, self._registry.gateway(gateway_id), permission,
                      f"gateway {gateway_id!r} is not registered")

    def require_device(self, principal: Principal, device_id: str,
                       permission: Permission = "read") -> Device:
        return _found(principal, self._registry.device(device_id), permission,
                      f"device {device_id!r} is not registered")


Homed = TypeVar("Homed", Gateway, Device)


def _found(principal: Principal, thing: Homed | None, permission: Permission,
           missing: str) -> Homed:
    """``thing`` if the caller may do ``permission`` in its home; 404 if it may not see it."""
    if thing is None:
        raise NotFound(missing)
    _check(principal, thing.home_id, permission, missing)
    return thing
