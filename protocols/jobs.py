"""AWS IoT Jobs, device MQTT API: topics, request models, reply payloads, transition rules.

Exactly what AWS documents (jobs-mqtt-api), so an agent built for AWS IoT Core talks to our
cloud unchanged and awsiotsdk's ``IotJobsClientV2`` works against it:

- requests on ``$aws/things/{thing}/jobs/get``, ``.../jobs/start-next``,
  ``.../jobs/{jobId}/get`` (``$next`` allowed) and ``.../jobs/{jobId}/update``; replies on the
  request topic plus ``/accepted`` or ``/rejected``, echoing ``clientToken``;
- events on ``.../jobs/notify`` and ``.../jobs/notify-next``;
- timestamps are epoch **seconds**; execution status ``QUEUED -> IN_PROGRESS -> SUCCEEDED |
  FAILED | REJECTED | TIMED_OUT | CANCELED | REMOVED``; a device may set only IN_PROGRESS,
  SUCCEEDED, FAILED and REJECTED; ``expectedVersion`` guards each update.

Pure: no I/O. The cloud's service and the agent's Jobs client both build on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.errors import InvalidMessage, ProtocolError

__all__ = [
    "DEVICE_STATUSES", "NEXT", "TERMINAL", "DescribeRequest", "ExecutionStatus", "JobsError",
    "JobsErrorCode", "JobsTopic", "StartNextRequest", "UpdateRequest", "check_update",
    "error_payload", "parse_request", "parse_topic", "reply_topic", "request_topic",
    "subscriptions",
]

NEXT = "$next"
JOB_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
THING = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
MAX_CLIENT_TOKEN = 64
MAX_STEP_TIMEOUT_MIN = 10080  # 7 days, AWS's bound


class ExecutionStatus(StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    TIMED_OUT = "TIMED_OUT"
    CANCELED = "CANCELED"
    REMOVED = "REMOVED"


TERMINAL = frozenset({ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED,
                      ExecutionStatus.REJECTED, ExecutionStatus.TIMED_OUT,
                      ExecutionStatus.CANCELED, ExecutionStatus.REMOVED})
PENDING = frozenset({ExecutionStatus.QUEUED, ExecutionStatus.IN_PROGRESS})
DEVICE_STATUSES = frozenset({ExecutionStatus.IN_PROGRESS, ExecutionStatus.SUCCEEDED,
                             ExecutionStatus.FAILED, ExecutionStatus.REJECTED})


class JobsErrorCode(StrEnum):
    INVALID_TOPIC = "InvalidTopic"
    INVALID_JSON = "InvalidJson"
    INVALID_REQUEST = "InvalidRequest"
    INVALID_STATE_TRANSITION = "InvalidStateTransition"
    RESOURCE_NOT_FOUND = "ResourceNotFound"
    VERSION_MISMATCH = "VersionMismatch"
    INTERNAL_ERROR = "InternalError"
    REQUEST_THROTTLED = "RequestThrottled"
    TERMINAL_STATE_REACHED = "TerminalStateReached"


class JobsError(ProtocolError):
    """A request the Jobs service rejects; ``state`` is the execution's current
    ``{status, statusDetails, versionNumber}`` for VersionMismatch / InvalidStateTransition."""

    def __init__(self, code: JobsErrorCode, message: str,
                 state: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.state = state


# -- topics ---------------------------------------------------------------------------------

Operation = Literal["get_pending", "start_next", "describe", "update", "notify", "notify_next"]
Suffix = Literal["accepted", "rejected"]


@dataclass(frozen=True)
class JobsTopic:
    thing: str
    op: Operation
    job_id: str | None = None
    suffix: Suffix | None = None


def _base(thing: str) -> str:
    if not THING.match(thing):
        raise InvalidMessage("thingName", f"{thing!r} is not a valid thing name")
    return f"$aws/things/{thing}/jobs"


def request_topic(thing: str, op: Operation, job_id: str | None = None) -> str:
    base = _base(thing)
    if op == "get_pending":
        return f"{base}/get"
    if op == "start_next":
        return f"{base}/start-next"
    if op == "notify":
        return f"{base}/notify"
    if op == "notify_next":
        return f"{base}/notify-next"
    if job_id is None or not (JOB_ID.match(job_id) or (job_id == NEXT and op == "describe")):
        raise InvalidMessage("jobId", f"{job_id!r} is not a valid job id")
    return f"{base}/{job_id}/{'get' if op == 'describe' else 'update'}"


def reply_topic(request: str, accepted: bool) -> str:
    return f"{request}/{'accepted' if accepted else 'rejected'}"


def parse_topic(topic: str) -> JobsTopic:
    """Parse a Jobs topic (request, reply or event); ``InvalidMessage`` for anything else."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[:2] != ["$aws", "things"] or parts[3] != "jobs":
        raise InvalidMessage("topic", f"{topic!r} is not a Jobs topic")
    thing, rest = parts[2], parts[4:]
    suffix: Suffix | None = None
    if rest[-1] in ("accepted", "rejected") and len(rest) > 1:
        suffix = rest[-1]  # type: ignore[assignment]
        rest = rest[:-1]
    parsed = _parse_rest(thing, rest, suffix)
    if parsed is None or not THING.match(thing):
        raise InvalidMessage("topic", f"{topic!r} is not a Jobs API topic")
    return parsed


def _parse_rest(thing: str, rest: list[str], suffix: Suffix | None) -> JobsTopic | None:
    if rest == ["get"]:
        return JobsTopic(thing, "get_pending", None, suffix)
    if rest == ["start-next"]:
        return JobsTopic(thing, "start_next", None, suffix)
    if rest in (["notify"], ["notify-next"]) and suffix is None:
        return JobsTopic(thing, "notify" if rest == ["notify"] else "notify_next")
    if len(rest) == 2 and rest[1] in ("get", "update"):
        job_id = rest[0]
        op: Operation = "describe" if rest[1] == "get" else "update"
        if JOB_ID.match(job_id) or (job_id == NEXT and op == "describe"):
            return JobsTopic(thing, op, job_id, suffix)
    return None


def subscriptions(thing: str) -> list[str]:
    """What a device subscribes to: every reply of its requests, and notify-next."""
    base = _base(thing)
    return [f"{base}/notify-next", f"{base}/get/+", f"{base}/start-next/+",
            f"{base}/+/get/+", f"{base}/+/update/+"]


# -- requests -------------------------------------------------------------------------------

StatusKey = Annotated[str, Field(pattern=r"^[a-zA-Z0-9:_-]{1,128}$")]
StatusValue = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f]+$")]
StatusDetails = dict[StatusKey, StatusValue]


class _Request(BaseModel):
    # AWS ignores fields it does not know (SDKs add optional ones); types are checked strictly
    model_config = ConfigDict(extra="ignore", strict=True)

    clientToken: str | None = Field(default=None, max_length=MAX_CLIENT_TOKEN)


class GetPendingRequest(_Request):
    pass


class StartNextRequest(_Request):
    statusDetails: StatusDetails | None = None
    stepTimeoutInMinutes: int | None = Field(default=None, ge=1, le=MAX_STEP_TIMEOUT_MIN)


class DescribeRequest(_Request):
    executionNumber: int | None = Field(default=None, ge=1)
    includeJobDocument: bool = True


class UpdateRequest(_Request):
    status: ExecutionStatus = Field(strict=False)  # the JSON string names the member
    statusDetails: StatusDetails | None = None
    expectedVersion: int | None = Field(default=None, ge=1)
    executionNumber: int | None = Field(default=None, ge=1)
    includeJobExecutionState: bool = False
    includeJobDocument: bool = False
    stepTimeoutInMinutes: int | None = Field(default=None, ge=1, le=MAX_STEP_TIMEOUT_MIN)


_MODELS: dict[str, type[_Request]] = {
    "get_pending": GetPendingRequest, "start_next": StartNextRequest,
    "describe": DescribeRequest, "update": UpdateRequest,
}


def client_token_of(payload: bytes) -> str | None:
    """The request's ``clientToken`` when it can be read, so even a rejection can echo it."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    token = data.get("clientToken") if isinstance(data, dict) else None
    return token if isinstance(token, str) and len(token) <= MAX_CLIENT_TOKEN else None


def parse_request(op: Operation, payload: bytes) -> _Request:
    """Validate a request payload; ``JobsError`` InvalidJson / InvalidRequest otherwise."""
    model = _MODELS.get(op)
    if model is None:
        raise JobsError(JobsErrorCode.INVALID_TOPIC, f"{op} is not a request")
    try:
        data = json.loads(payload) if payload.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobsError(JobsErrorCode.INVALID_JSON, f"payload is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise JobsError(JobsErrorCode.INVALID_JSON, "payload must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise JobsError(JobsErrorCode.INVALID_REQUEST, f"{where}: {err['msg']}") from exc


def check_update(status: ExecutionStatus, version: int, request: UpdateRequest,
                 state: dict[str, Any]) -> None:
    """AWS's rules for ``UpdateJobExecution`` against an execution's current status/version."""
    if request.status not in DEVICE_STATUSES:
        raise JobsError(JobsErrorCode.INVALID_REQUEST,
                        f"status {request.status.value} cannot be set by a device; use "
                        "IN_PROGRESS, SUCCEEDED, FAILED or REJECTED")
    if status in TERMINAL:
        raise JobsError(JobsErrorCode.INVALID_STATE_TRANSITION,
                        f"execution is {status.value} (terminal); it cannot become "
                        f"{request.status.value}", state)
    if request.expectedVersion is not None and request.expectedVersion != version:
        raise JobsError(JobsErrorCode.VERSION_MISMATCH,
                        f"expectedVersion {request.expectedVersion} but the execution is at "
                        f"version {version}", state)


def error_payload(error: JobsError, client_token: str | None, now_s: int) -> dict[str, Any]:
    out: dict[str, Any] = {"code": error.code.value, "message": error.message,
                           "timestamp": now_s}
    if client_token is not None:
        out["clientToken"] = client_token
    if error.state is not None:
        out["executionState"] = error.state
    return out
