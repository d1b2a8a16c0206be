"""What a homewatt actuator's named shadow holds, and which command each desired key means.

Each actuator has the named shadow ``$aws/things/{gateway}/shadow/name/{local_id}``. Its
desired and reported sections use the keys of the actuator's read-back
(``edge_agent.ports.ActuatorResult``), so "desired equals reported" is literally true once the
device got there:

- ``state``: ``"on"`` / ``"off"`` (``switch_on`` / ``switch_off``);
- ``value``: a number in the device's unit (``set_setpoint``);
- ``amps``: a number (``set_current_limit``).

The agent reports those keys plus ``last_command`` (id, outcome, reason) so the app can tell why
a desired value was not reached (an interlock refused it, say). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from protocols.commands import Action, ParamValue
from protocols.errors import InvalidMessage

__all__ = ["DESIRED_KEYS", "DesiredAction", "desired_actions", "shadow_command_id"]

DESIRED_KEYS = ("state", "value", "amps")
_NUMERIC = {"value": (Action.SET_SETPOINT, "value"), "amps": (Action.SET_CURRENT_LIMIT, "amps")}


@dataclass(frozen=True)
class DesiredAction:
    key: str  # the desired key it fulfils
    action: Action
    params: dict[str, ParamValue]


def desired_actions(desired: dict[str, Any]) -> list[DesiredAction]:
    """The commands that bring a device to ``desired`` (a delta, usually), in key order.

    Raises ``InvalidMessage`` naming the key for an unknown key or a bad value.
    """
    out: list[DesiredAction] = []
    for key in sorted(desired):
        value = desired[key]
        if key == "state":
            if value not in ("on", "off"):
                raise InvalidMessage("desired.state", f"{value!r} is not 'on' or 'off'")
            action = Action.SWITCH_ON if value == "on" else Action.SWITCH_OFF
            out.append(DesiredAction(key, action, {}))
        elif key in _NUMERIC:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidMessage(f"desired.{key}", f"{value!r} is not a number")
            action, param = _NUMERIC[key]
            out.append(DesiredAction(key, action, {param: float(value)}))
        else:
            raise InvalidMessage(f"desired.{key}",
                                 f"not a device setting (expected {', '.join(DESIRED_KEYS)})")
    return out


def shadow_command_id(gateway_id: str, device_id: str, version: int, key: str) -> str:
    """The command id of applying ``key`` of the desired state at shadow ``version``.

    Deterministic, so a delta seen twice (redelivered, or again in ``get`` after a reconnect
    or a crash) maps to the same id and the agent's dedup window runs it at most once.
    """
    digest = hashlib.sha256(f"{gateway_id}/{device_id}/{version}/{key}".encode()).hexdigest()
    return f"shadow-{digest[:40]}"
