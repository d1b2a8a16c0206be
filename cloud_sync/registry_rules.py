"""Registry input rules (pure): ids, names, e-mail addresses, time zones, device kinds and roles.

Each check raises :class:`~cloud_sync.errors.BadInput` naming the field and the fix; the REST API
answers 422 with it and the admin CLI prints it and exits 2.
"""

from __future__ import annotations

import re
import secrets
import zoneinfo

from cloud_sync.auth.principal import Role
from cloud_sync.errors import BadInput
from protocols.commands import Action
from protocols.models import GATEWAY_ID_PATTERN, METER_ID_PATTERN

DEVICE_KINDS = ("meter", "actuator")
METER_ROLES = ("grid", "pv", "load")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_HOME_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_PASSWORD = 10


def new_id(prefix: str) -> str:
    """``home-3f9a1c2b7d4e5f60``: readable in logs, unguessable, URL-safe."""
    return f"{prefix}-{secrets.token_hex(8)}"


def device_id_for(gateway_id: str, local_id: str) -> str:
    """The default registry id of a device: unique fleet-wide (gateway ids hold no ``.``) and
    deterministic, so registering the same device twice is a no-op, not a duplicate."""
    return f"{gateway_id}.{local_id}"


def check_home_id(home_id: str) -> str:
    if not _HOME_ID.match(home_id):
        raise BadInput("home_id: use 1-64 letters, digits, '_' or '-'")
    return home_id


def check_gateway_id(gateway_id: str) -> str:
    if not re.match(GATEWAY_ID_PATTERN, gateway_id):
        raise BadInput(f"gateway_id: {gateway_id!r} must match {GATEWAY_ID_PATTERN} "
                       "(an AWS IoT thing name)")
    return gateway_id


def check_local_id(local_id: str) -> str:
    if not re.match(METER_ID_PATTERN, local_id):
        raise BadInput(f"local_id: {local_id!r} must match {METER_ID_PATTERN} (the id in the "
                       "gateway's agent.toml)")
    return local_id


def check_name(field: str, name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise BadInput(f"{field}: give 1-200 characters")
    return name


def check_timezone(timezone: str) -> str:
    """An IANA zone name (``Europe/Berlin``); analytics buckets days and DST in it."""
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise BadInput(f"timezone: {timezone!r} is not an IANA time zone "
                       "(e.g. Europe/Berlin, America/New_York, UTC)") from exc
    return timezone


def check_email(email: str) -> str:
    """Lower-cased, so log-in does not depend on how the address was typed."""
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 254:
        raise BadInput(f"email: {email!r} is not an e-mail address")
    return email


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise BadInput(f"password: use at least {MIN_PASSWORD} characters")
    return password


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError as exc:
        raise BadInput(f"role: {role!r} is not a role (use {', '.join(r.value for r in Role)})"
                       ) from exc


def check_device(kind: str, role: str | None, capabilities: list[str]) -> None:
    """Meters have a role and no capabilities; actuators have capabilities (the actions they
    accept) and no role."""
    if kind not in DEVICE_KINDS:
        raise BadInput(f"kind: {kind!r} is not a device kind (use {', '.join(DEVICE_KINDS)})")
    if kind == "meter":
        if role not in METER_ROLES:
            raise BadInput(f"role: a meter needs a role: {', '.join(METER_ROLES)}")
        if capabilities:
            raise BadInput("capabilities: meters take no commands; register an actuator")
        return
    if role is not None:
        raise BadInput("role: only meters have a role")
    known = {a.value for a in Action}
    bad = sorted(set(capabilities) - known) or ([] if capabilities else ["(none given)"])
    if bad:
        raise BadInput(f"capabilities: {', '.join(bad)} not an action "
                       f"(use {', '.join(sorted(known))})")
