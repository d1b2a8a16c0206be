"""Pure decisions of the command pipeline: request validation, idempotency hashing, status
transitions on an ack, and backpressure (rate limit and queue bound). No I/O here.

Statuses: ``pending`` (stored, not yet PUBACKed) -> ``sent`` (the broker took it at least once)
-> ``delivered`` -> one final status: ``executed | rejected | failed | expired | unknown``.
Our edge acks only with an outcome, so ``delivered_at`` is set together with the outcome and
``delivered`` is never the resting status today (a receipt-only ack would use it). Statuses
never move backwards and a duplicate ack never changes a recorded outcome, with one exception:
a command *we* expired (no ack before ``expires_at``, ``delivered_at`` still empty) takes the
device's outcome when a late ack arrives, because the device's word about what it did wins
over our timeout.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocols.commands import Action, CommandAck, ParamValue, Priority, check_params

TTL_MIN_S = 1
TTL_MAX_S = 86_400
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
RATE_WINDOW_MS = 60_000
# Expired by the cloud's sweeper; the marker that lets a late device ack still be recorded.
EXPIRED_UNACKED_REASON = "no acknowledgement from the gateway before expires_at"


class CommandStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    EXECUTED = "executed"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


FINAL_STATUSES = frozenset({CommandStatus.EXECUTED, CommandStatus.REJECTED, CommandStatus.FAILED,
                            CommandStatus.EXPIRED, CommandStatus.UNKNOWN})
OPEN_STATUSES = frozenset(set(CommandStatus) - FINAL_STATUSES)


class CommandRequestError(ValueError):
    """A request the API must refuse; ``status_code`` is the HTTP status, the message the fix."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class CommandRequest:
    """A validated ``POST .../commands`` body."""

    action: Action
    params: dict[str, ParamValue]
    ttl_s: int
    priority: Priority

    def canonical_hash(self) -> str:
        """sha256 of the canonical JSON body: equal for equal requests, whatever the key order
        or defaults the client spelled out."""
        body = {"action": self.action.value, "params": self.params, "ttl_s": self.ttl_s,
                "priority": self.priority.value}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def parse_request(body: Any, default_ttl_s: int) -> CommandRequest:
    """Validate the JSON body's shape; raise ``CommandRequestError`` (422) naming the field."""
    if not isinstance(body, dict):
        raise CommandRequestError(422, "body: must be a JSON object with action, params, "
                                       "ttl_s, priority")
    unknown = set(body) - {"action", "params", "ttl_s", "priority"}
    if unknown:
        raise CommandRequestError(422, f"body.{sorted(unknown)[0]}: unknown field "
                                       "(allowed: action, params, ttl_s, priority)")
    action = _enum(Action, body.get("action"), "action")
    priority = _enum(Priority, body.get("priority", Priority.NORMAL.value), "priority")
    params = body.get("params", {})
    if not isinstance(params, dict) or not all(
            isinstance(v, int | float | bool | str) for v in params.values()):
        raise CommandRequestError(422, "params: must be an object of numbers, booleans or "
                                       "strings")
    ttl = body.get("ttl_s", default_ttl_s)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not TTL_MIN_S <= ttl <= TTL_MAX_S:
        raise CommandRequestError(422, f"ttl_s: must be an integer from {TTL_MIN_S} to "
                                       f"{TTL_MAX_S} seconds")
    return CommandRequest(action, dict(params), ttl, priority)


def _enum(kind: type[Action] | type[Priority], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise CommandRequestError(422, f"{name}: {value!r} is not one of {allowed}") from None


def check_capabilities(request: CommandRequest, device_id: str,
                       capabilities: list[str]) -> None:
    """Raise ``CommandRequestError`` (422) when the device cannot do it or params are bad."""
    if request.action.value not in capabilities:
        supported = ", ".join(capabilities) or "nothing"
        raise CommandRequestError(422, f"action: device {device_id!r} does not support "
                                       f"{request.action.value} (it supports: {supported})")
    try:
        check_params(request.action, request.params)
    except ValueError as exc:
        raise CommandRequestError(422, str(exc)) from None


def check_idempotency_key(key: str | None) -> str:
    if key is None or not key:
        raise CommandRequestError(400, "Idempotency-Key header is required: send a unique "
                                       "value (e.g. a UUID) per command and reuse it on retries")
    if not IDEMPOTENCY_KEY_PATTERN.match(key):
        raise CommandRequestError(400, "Idempotency-Key: 1-200 printable ASCII characters, "
                                       "no spaces")
    return key


# -- backpressure ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why a new command was refused: 429 (rate) or 503 (queue full), with Retry-After."""

    status_code: int
    message: str
    retry_after_s: int


def rate_refusal(recent_created_at: list[int], now_ms: int, rate_per_min: int,
                 ) -> Refusal | None:
    """Per-device limit: at most ``rate_per_min`` commands created in the last 60 s.

    ``recent_created_at`` are the creation times inside the window. Retry-After is the time
    until the oldest of them leaves the window, so a token is free by then.
    """
    in_window = sorted(t for t in recent_created_at if t > now_ms - RATE_WINDOW_MS)
    if len(in_window) < rate_per_min:
        return None
    frees_at = in_window[len(in_window) - rate_per_min] + RATE_WINDOW_MS
    wait_s = max(1, math.ceil((frees_at - now_ms) / 1000))
    return Refusal(429, f"rate limit: at most {rate_per_min} commands per minute per device; "
                        f"retry in {wait_s}s", wait_s)


def queue_refusal(open_expires_at: list[int], now_ms: int, queue_max: int) -> Refusal | None:
    """Per-gateway bound on open (not final) commands. Retry-After is the time until the first
    open command expires at the latest (acks usually free a slot much sooner)."""
    if len(open_expires_at) < queue_max:
        return None
    soonest = min(open_expires_at)
    wait_s = max(1, math.ceil((soonest - now_ms) / 1000))
    return Refusal(503, f"command queue for this gateway is full ({queue_max} open "
                        f"commands); retry in {wait_s}s", wait_s)


# -- acks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckUpdate:
    """Columns to set on the command after an ack (``None``: leave the row as it is)."""

    status: CommandStatus
    delivered_at: int
    completed_at: int
    reason: str | None
    result: dict[str, ParamValue]


def apply_ack(status: CommandStatus, delivered_at: int | None, ack: CommandAck,
              now_ms: int) -> AckUpdate | None:
    """Decide what an ack changes. ``None`` for a repeat that must not change anything."""
    if status in FINAL_STATUSES and not (status is CommandStatus.EXPIRED and delivered_at is None):
        return None
    outcome = CommandStatus(ack.outcome.value)
    return AckUpdate(outcome, now_ms, now_ms, ack.reason, dict(ack.result))


def priority_rank(priority: Priority) -> int:
    """Outbox ordering: lower is claimed first (safety before normal)."""
    return 0 if priority is Priority.SAFETY else 1
