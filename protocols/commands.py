"""Command messages: cloud -> gateway on ``hw/{gw}/commands``, acks back on ``.../commands/ack``.

Each logical command has one ``command_id`` for its whole life: the cloud re-publishes the same
message until the gateway acknowledges it or it expires, and the gateway executes a
``command_id`` at most once (its dedup window), re-acking a repeat with the stored outcome and
``duplicate=True``. A repeat never changes the outcome the cloud records.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from protocols.models import (
    SCHEMA_VERSION,
    EpochMs,
    GatewayId,
    MeterId,
    TraceParentField,
    WireModel,
)

CommandId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
ParamValue = float | int | bool | str


class Action(StrEnum):
    """What a device can be told to do; a device's capabilities list the actions it accepts."""

    SWITCH_ON = "switch_on"
    SWITCH_OFF = "switch_off"
    SET_SETPOINT = "set_setpoint"  # params: {"value": float} in the device's unit (e.g. Cel)
    SET_CURRENT_LIMIT = "set_current_limit"  # params: {"amps": float} (EV charger)


# The parameter each action requires (name -> type); anything else in params is rejected.
ACTION_PARAMS: dict[Action, dict[str, type]] = {
    Action.SWITCH_ON: {},
    Action.SWITCH_OFF: {},
    Action.SET_SETPOINT: {"value": float},
    Action.SET_CURRENT_LIMIT: {"amps": float},
}


class Priority(StrEnum):
    NORMAL = "normal"
    SAFETY = "safety"  # bypasses rate limits and jumps the queue (e.g. switch off)


class Outcome(StrEnum):
    """The gateway's final word on a command."""

    EXECUTED = "executed"
    REJECTED = "rejected"  # an interlock or validation refused it; ``reason`` says which
    EXPIRED = "expired"  # arrived after ``expires_at``: never executed
    FAILED = "failed"  # the actuator reported an error; it did not take effect
    UNKNOWN = "unknown"  # interrupted mid-actuation (crash): ``result`` holds the read-back


def check_params(action: Action, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
    """Validate ``params`` for ``action``; raise ``ValueError`` naming the parameter."""
    wanted = ACTION_PARAMS[action]
    for name in params:
        if name not in wanted:
            raise ValueError(f"params.{name}: not a parameter of {action.value} "
                             f"(expected: {', '.join(wanted) or 'none'})")
    for name, kind in wanted.items():
        if name not in params:
            raise ValueError(f"params.{name}: required by {action.value}")
        value = params[name]
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"params.{name}: must be a number")
    return params


class Command(WireModel):
    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: CommandId
    gateway_id: GatewayId
    device_id: MeterId
    action: Action
    params: dict[str, ParamValue] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    issued_at: EpochMs
    expires_at: EpochMs
    traceparent: TraceParentField | None = None  # so one trace follows the command

    @model_validator(mode="after")
    def _valid(self) -> Command:
        check_params(self.action, self.params)
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self


class CommandAck(WireModel):
    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: CommandId
    gateway_id: GatewayId
    device_id: MeterId
    outcome: Outcome
    duplicate: bool = False  # a re-ack of an earlier delivery: same outcome, nothing re-executed
    reason: Annotated[str, Field(max_length=500)] | None = None
    result: dict[str, ParamValue] = Field(default_factory=dict)  # e.g. {"state": "on"}
    ts: EpochMs  # when the outcome was decided on the gateway
    traceparent: TraceParentField | None = None  # W3C trace context of the gateway's ack span
