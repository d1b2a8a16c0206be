"""Builders and parsers for every topic in ARCHITECTURE.md.

Limits are AWS IoT Core's, so one agent build runs against it unchanged: a topic is at most 256
bytes and 7 slashes (AWS does not count the slashes of a reserved ``$aws/things/{t}/`` prefix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from protocols.errors import InvalidMessage

MAX_TOPIC_BYTES = 256
MAX_TOPIC_SLASHES = 7
MAX_PAYLOAD_BYTES = 128 * 1024
_THING = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")
_SHADOW_NAME = re.compile(r"^[A-Za-z0-9:_-]{1,64}$")

ShadowOp = Literal["get", "update", "delete"]
ShadowSuffix = Literal["accepted", "rejected", "delta", "documents"]
_SHADOW_OPS = ("get", "update", "delete")
_SHADOW_SUFFIXES = ("accepted", "rejected", "delta", "documents")
HwKind = Literal["telemetry", "telemetry_ack", "status", "commands", "commands_ack"]
_HW_TAILS: dict[tuple[str, ...], HwKind] = {
    ("telemetry",): "telemetry",
    ("telemetry", "ack"): "telemetry_ack",
    ("status",): "status",
    ("commands",): "commands",
    ("commands", "ack"): "commands_ack",
}


def is_shadow_name(name: str) -> bool:
    """AWS's rule for (named) shadow names: ``[A-Za-z0-9:_-]``, 1-64 characters."""
    return _SHADOW_NAME.match(name) is not None


def _thing(name: str) -> str:
    if not _THING.match(name):
        raise InvalidMessage(
            "gateway_id", f"{name!r} is not a valid thing name (A-Z a-z 0-9 : _ -, 1-128 chars)"
        )
    return name


def _checked(topic: str, reserved_slashes: int = 0) -> str:
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise InvalidMessage("topic", f"longer than {MAX_TOPIC_BYTES} bytes")
    if topic.count("/") - reserved_slashes > MAX_TOPIC_SLASHES:
        raise InvalidMessage("topic", f"more than {MAX_TOPIC_SLASHES} slashes")
    return topic


def telemetry(gateway_id: str) -> str:
    return _checked(f"hw/{_thing(gateway_id)}/telemetry")


def telemetry_ack(gateway_id: str) -> str:
    return _checked(f"hw/{_thing(gateway_id)}/telemetry/ack")


def status(gateway_id: str) -> str:
    return _checked(f"hw/{_thing(gateway_id)}/status")


def commands(gateway_id: str) -> str:
    return _checked(f"hw/{_thing(gateway_id)}/commands")


def commands_ack(gateway_id: str) -> str:
    return _checked(f"hw/{_thing(gateway_id)}/commands/ack")


def shadow(
    thing: str,
    op: ShadowOp,
    suffix: ShadowSuffix | None = None,
    name: str | None = None,
) -> str:
    """``$aws/things/{thing}/shadow[/name/{name}]/{op}[/{suffix}]``."""
    base = f"$aws/things/{_thing(thing)}/shadow"
    if name is not None:
        if not _SHADOW_NAME.match(name):
            raise InvalidMessage("shadow_name", f"{name!r} is not a valid shadow name")
        base += f"/name/{name}"
    topic = f"{base}/{op}" + (f"/{suffix}" if suffix else "")
    return _checked(topic, reserved_slashes=3)


def shared(group: str, topic_filter: str) -> str:
    """A shared-subscription filter so replicas split one stream (MQTT 5 ``$share``)."""
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True)
class HwTopic:
    kind: HwKind
    gateway_id: str


@dataclass(frozen=True)
class ShadowTopic:
    thing: str
    op: ShadowOp
    suffix: ShadowSuffix | None
    name: str | None


def parse(topic: str) -> HwTopic | ShadowTopic:
    """Parse a topic of ours; raise :class:`InvalidMessage` for anything else."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[0] == "hw":
        kind = _HW_TAILS.get(tuple(parts[2:]))
        if kind is not None and _THING.match(parts[1]):
            return HwTopic(kind, parts[1])
    elif len(parts) >= 5 and parts[:2] == ["$aws", "things"] and parts[3] == "shadow":
        return _parse_shadow(parts[2], parts[4:], topic)
    raise InvalidMessage("topic", f"{topic!r} is not a homewatt topic")


def _parse_shadow(thing: str, rest: list[str], topic: str) -> ShadowTopic:
    name: str | None = None
    if len(rest) >= 3 and rest[0] == "name":
        name, rest = rest[1], rest[2:]
    ok = (
        _THING.match(thing)
        and (name is None or _SHADOW_NAME.match(name))
        and 1 <= len(rest) <= 2
        and rest[0] in _SHADOW_OPS
        and (len(rest) == 1 or rest[1] in _SHADOW_SUFFIXES)
    )
    if not ok:
        raise InvalidMessage("topic", f"{topic!r} is not a shadow topic")
    op: ShadowOp = rest[0]  # type: ignore[assignment]
    suffix: ShadowSuffix | None = rest[1] if len(rest) == 2 else None  # type: ignore[assignment]
    return ShadowTopic(thing, op, suffix, name)
