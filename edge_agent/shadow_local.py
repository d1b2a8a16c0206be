"""The agent's local copy of an actuator's named shadow, and every decision about it. Pure.

:class:`LocalShadow` holds what the agent knows durably: the device's last reported state
(and whether the cloud still has to get it), the last cloud version and desired state seen,
and the desired requests it took on.

**One request, one command id.** A desired key is a request identified by its value and the
time it was set (its desired metadata timestamp). The first time the agent sees a request it
records the shadow version it saw it at; that version, never a later one, goes into
``shadow_command_id``. Reported-only updates bump the version too, so a delta seen again at
a later version (after a crash, a reconnect, a 409) still maps to the same command id and the
dedup window runs it at most once. A request whose key changed or disappeared in the cloud is
forgotten; a new one takes its place.

**Clearing.** Once a request's command is acked (or the request is invalid) it is *handled*:
the next report sets its desired key to ``null`` in the same update that reports the state,
guarded by the last version seen, so a value changed meanwhile is never wiped (409 instead).

**Versions.** The known version moves to a delta's or a ``get``'s version, or to an accepted
update's new version when that is exactly one more (nothing happened in between). Deltas
older than the known version are stale and ignored (AWS's advice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from edge_agent.ports import ActuatorResult, JsonObject, ShadowDelta, ShadowSnapshot
from protocols import shadow as aws
from protocols.commands import CommandAck
from protocols.device_shadow import DesiredAction, desired_actions, shadow_command_id
from protocols.errors import InvalidMessage

__all__ = ["DesiredRequest", "LocalShadow", "Planned", "after_report", "expected_delta",
           "observe_ack", "observe_read_back", "plan", "report_request", "take_delta",
           "take_snapshot", "unfinished"]


@dataclass(frozen=True)
class DesiredRequest:
    """A desired key's value as the agent took it on (see the module docstring)."""

    value: object
    ts: int | None  # desired metadata timestamp, epoch s
    version: int  # the shadow version it was first seen at: part of its command id
    handled: bool = False  # acked or refused: its desired key is to be cleared

    def same(self, value: object, ts: int | None) -> bool:
        return aws.values_equal(self.value, value) and (
            self.ts is None or ts is None or self.ts == ts)


@dataclass(frozen=True)
class LocalShadow:
    name: str
    reported: JsonObject = field(default_factory=dict)
    report_pending: bool = False  # reported changed since the cloud last accepted it
    version: int | None = None  # the last cloud version known; None: never seen one
    desired: JsonObject = field(default_factory=dict)  # the last cloud desired seen
    requests: Mapping[str, DesiredRequest] = field(default_factory=dict)

    def command_id(self, gateway_id: str, key: str) -> str | None:
        request = self.requests.get(key)
        if request is None:
            return None
        return shadow_command_id(gateway_id, self.name, request.version, key)


@dataclass(frozen=True)
class Planned:
    """A command to submit for a desired key."""

    key: str
    command_id: str
    action: DesiredAction


def take_snapshot(shadow: LocalShadow, snapshot: ShadowSnapshot | None) -> LocalShadow:
    """The cloud's document as ``get`` returned it (``None``: no shadow): cloud wins for
    desired, so requests whose key changed or went away are forgotten."""
    if snapshot is None:
        return replace(shadow, version=None, desired={}, requests={})
    kept = {k: r for k, r in shadow.requests.items()
            if k in snapshot.desired and r.same(snapshot.desired[k], snapshot.desired_ts.get(k))}
    return replace(shadow, version=snapshot.version, desired=dict(snapshot.desired),
                   requests=kept)


def take_delta(shadow: LocalShadow, delta: ShadowDelta) -> LocalShadow | None:
    """The shadow after a delta event; ``None`` when the delta is stale."""
    if shadow.version is not None and delta.version < shadow.version:
        return None
    kept = {k: r for k, r in shadow.requests.items()
            if k not in delta.state or r.same(delta.state[k], delta.desired_ts.get(k))}
    return replace(shadow, version=delta.version, desired={**shadow.desired, **delta.state},
                   requests=kept)


def plan(shadow: LocalShadow, gateway_id: str, delta_state: JsonObject,
         desired_ts: Mapping[str, int], version: int) -> tuple[LocalShadow, list[Planned]]:
    """The commands for ``delta_state`` seen at ``version``, and the shadow with the requests
    recorded (persist it before submitting them). Handled requests get no command (their
    clear is pending); an invalid key or value is handled at once, its reason reported in
    ``last_command``, so it is cleared and never loops."""
    requests = dict(shadow.requests)
    reported = shadow.reported
    pending = shadow.report_pending
    out: list[Planned] = []
    for key in sorted(delta_state):
        value, ts = delta_state[key], desired_ts.get(key)
        request = requests.get(key)
        if request is None or not request.same(value, ts):
            request = requests[key] = DesiredRequest(value, ts, version)
        if request.handled:
            continue
        command_id = shadow_command_id(gateway_id, shadow.name, request.version, key)
        try:
            (action,) = desired_actions({key: value})
        except InvalidMessage as exc:
            requests[key] = replace(request, handled=True)
            reported = {**reported, "last_command": {"id": command_id, "outcome": "rejected",
                                                     "reason": str(exc)}}
            pending = True
            continue
        out.append(Planned(key, command_id, action))
    return replace(shadow, requests=requests, reported=reported, report_pending=pending), out


def observe_ack(shadow: LocalShadow, gateway_id: str, ack: CommandAck,
                state: ActuatorResult | None) -> LocalShadow:
    """Any command's ack on this device: ``state`` (the device's actual state, ``None`` when
    unknown) and ``last_command`` become reported; the request it fulfils is handled.
    ``reason`` is sent as ``null`` when there is none, so an old reason is deleted."""
    last = {"id": ack.command_id, "outcome": ack.outcome.value, "reason": ack.reason}
    requests = {k: (replace(r, handled=True)
                    if shadow_command_id(gateway_id, shadow.name, r.version, k) == ack.command_id
                    else r)
                for k, r in shadow.requests.items()}
    reported = {**shadow.reported, **(state or {}), "last_command": last}
    return replace(shadow, reported=reported, report_pending=True, requests=requests)


def observe_read_back(shadow: LocalShadow, state: ActuatorResult) -> LocalShadow:
    """The device's state read at start-up: reported when it differs from what was."""
    if all(aws.values_equal(shadow.reported.get(k), v) for k, v in state.items()):
        return shadow
    return replace(shadow, reported={**shadow.reported, **state}, report_pending=True)


def unfinished(shadow: LocalShadow) -> JsonObject:
    """Requests taken on whose ack was never seen (the agent died first): to submit again
    even when reported already matches, so their dedup'd ack clears them."""
    return {k: r.value for k, r in shadow.requests.items() if not r.handled}


def report_request(shadow: LocalShadow) -> tuple[JsonObject, int | None] | None:
    """The update to send (state, version guard), or ``None`` when nothing is pending: local
    wins for reported (all of it is sent); handled desired keys are cleared, guarded."""
    clears = sorted(k for k, r in shadow.requests.items() if r.handled)
    if not shadow.report_pending and not clears:
        return None
    state: JsonObject = {"reported": dict(shadow.reported)}
    if clears:
        state["desired"] = {k: None for k in clears}
        return state, shadow.version
    return state, None


def after_report(shadow: LocalShadow, sent: LocalShadow, state: JsonObject,
                 new_version: int) -> LocalShadow:
    """``shadow`` (now) after the update built from ``sent`` (then) was accepted at
    ``new_version``; acks observed meanwhile stay pending."""
    cleared = state.get("desired")
    cleared_keys = set(cleared) if isinstance(cleared, dict) else set()
    requests = {k: r for k, r in shadow.requests.items()
                if not (k in cleared_keys and r == sent.requests.get(k))}
    desired = {k: v for k, v in shadow.desired.items() if k not in cleared_keys}
    follows = (shadow.version is None and new_version == 1) or (
        shadow.version is not None and new_version == shadow.version + 1)
    return replace(shadow, requests=requests, desired=desired,
                   report_pending=shadow.reported != sent.reported,
                   version=new_version if follows else shadow.version)


def expected_delta(snapshot: ShadowSnapshot | None, state: JsonObject) -> JsonObject:
    """The delta once ``state`` is merged into ``snapshot`` (exactly as the service merges)."""
    if snapshot is None:
        return {}
    doc = aws.ShadowDocument(version=snapshot.version, exists=True,
                             desired=dict(snapshot.desired) or None,
                             reported=dict(snapshot.reported) or None)
    sections: dict[str, aws.Section | None] = {
        k: v for k, v in state.items() if k in ("desired", "reported") and isinstance(v, dict)}
    try:
        return aws.apply_update(doc, aws.UpdateRequest(sections), 0).document.delta()
    except aws.ShadowError:
        return dict(snapshot.delta)
