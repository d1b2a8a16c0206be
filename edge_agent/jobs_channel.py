"""``UplinkJobsChannel``: the AWS IoT Jobs device API over the agent's MQTT ``Uplink``, and
``FakeJobsChannel`` beside it.

Requests go out QoS 1 with a fresh ``clientToken``; the reply on ``/accepted`` or
``/rejected`` that echoes it resolves the request (a reply for someone else's token is
ignored, as AWS's SDKs do). notify-next events land in a one-slot mailbox: only the newest
matters, so a burst never queues up. The topic filters are registered on the agent's
:class:`~edge_agent.inbound.InboundRouter`, so the uplink subscribes to them at every CONNACK.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from edge_agent.errors import EdgeAgentError
from edge_agent.inbound import InboundRouter
from edge_agent.ports import JobExecution, Message, Uplink
from edge_agent.token_requests import TokenRequests
from protocols import jobs as wire
from protocols.errors import InvalidMessage

__all__ = ["FakeJobsChannel", "JobsRejected", "JobsUnavailable", "UplinkJobsChannel",
           "execution_of"]

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_S = 10.0


class JobsUnavailable(EdgeAgentError):
    """No reply within the timeout (offline, broker down): try again later."""


class JobsRejected(EdgeAgentError):
    """The Jobs service refused; ``code`` is AWS's (``VersionMismatch``, ...)."""

    def __init__(self, code: str, message: str, version: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.version = version


def execution_of(data: Mapping[str, Any]) -> JobExecution:
    """A ``JobExecution`` from AWS's JSON; raises ``InvalidMessage`` naming the field."""
    try:
        document = data.get("jobDocument") or {}
        details = data.get("statusDetails") or {}
        if not isinstance(document, dict) or not isinstance(details, dict):
            raise TypeError("jobDocument and statusDetails must be objects")
        return JobExecution(job_id=str(data["jobId"]), status=str(data["status"]),
                            version=int(data["versionNumber"]),
                            execution_number=int(data["executionNumber"]),
                            document=document, status_details={str(k): str(v) for k, v in
                                                               details.items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage("execution", f"not a JobExecution: {exc}") from exc


class UplinkJobsChannel:
    def __init__(self, thing: str, uplink: Uplink, *,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.thing = thing
        self._requests = TokenRequests(uplink, timeout_s)
        self._next: asyncio.Queue[JobExecution | None] = asyncio.Queue(maxsize=1)
        self.ignored = 0

    def register(self, router: InboundRouter) -> None:
        for topic_filter in wire.subscriptions(self.thing):
            router.add(topic_filter, self.on_message)

    # -- JobsChannel -------------------------------------------------------------------

    async def start_next(self, *, step_timeout_min: int | None = None,
                         details: Mapping[str, str] | None = None) -> JobExecution | None:
        body: dict[str, Any] = {}
        if step_timeout_min is not None:
            body["stepTimeoutInMinutes"] = step_timeout_min
        if details is not None:
            body["statusDetails"] = dict(details)
        reply = await self._request(wire.request_topic(self.thing, "start_next"), body)
        return execution_of(reply["execution"]) if "execution" in reply else None

    async def describe(self, job_id: str) -> JobExecution | None:
        try:
            reply = await self._request(wire.request_topic(self.thing, "describe", job_id),
                                        {"includeJobDocument": True})
        except JobsRejected as exc:
            if exc.code == wire.JobsErrorCode.RESOURCE_NOT_FOUND:
                return None
            raise
        return execution_of(reply["execution"]) if "execution" in reply else None

    async def update(self, job_id: str, status: str, *, expected_version: int | None,
                     details: Mapping[str, str], step_timeout_min: int | None = None) -> int:
        body: dict[str, Any] = {"status": status, "statusDetails": dict(details),
                                "includeJobExecutionState": True}
        if expected_version is not None:
            body["expectedVersion"] = expected_version
        if step_timeout_min is not None:
            body["stepTimeoutInMinutes"] = step_timeout_min
        reply = await self._request(wire.request_topic(self.thing, "update", job_id), body)
        return int(reply["executionState"]["versionNumber"])

    async def next_changed(self) -> JobExecution | None:
        return await self._next.get()

    # -- plumbing ----------------------------------------------------------------------

    async def _request(self, topic: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            accepted, reply = await self._requests.request(topic, body)
        except TimeoutError as exc:
            raise JobsUnavailable(f"no reply to {topic} within "
                                  f"{self._requests.timeout_s:.0f}s") from exc
        if not accepted:
            state = reply.get("executionState") or {}
            version = state.get("versionNumber") if isinstance(state, dict) else None
            raise JobsRejected(str(reply.get("code")), str(reply.get("message")),
                               int(version) if isinstance(version, int) else None)
        return reply

    async def on_message(self, message: Message) -> None:
        try:
            topic = wire.parse_topic(message.topic)
            data = json.loads(message.payload)
            if not isinstance(data, dict):
                raise InvalidMessage("payload", "not a JSON object")
            if topic.op == "notify_next":
                self._notify(execution_of(data["execution"]) if "execution" in data else None)
                return
        except (InvalidMessage, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.ignored += 1
            log.warning("ignoring Jobs message on %s: %s", message.topic, exc)
            return
        if topic.suffix is not None:
            self._requests.resolve(topic.suffix == "accepted", data)

    def _notify(self, execution: JobExecution | None) -> None:
        if self._next.full():
            self._next.get_nowait()  # only the newest next execution matters
        self._next.put_nowait(execution)


class FakeJobsChannel:
    """An in-memory Jobs service for one thing, with AWS's update rules (``check_update``).

    ``add(job_id, document)`` queues an execution and raises a notify-next, the way the cloud
    does when a rollout reaches this gateway; ``executions`` holds what the device did.
    """

    def __init__(self) -> None:
        self.executions: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._next: asyncio.Queue[JobExecution | None] = asyncio.Queue()
        self.offline = False

    def add(self, job_id: str, document: dict[str, object]) -> None:
        self.executions[job_id] = {"jobId": job_id, "status": "QUEUED", "versionNumber": 1,
                                   "executionNumber": len(self._order) + 1,
                                   "jobDocument": document, "statusDetails": {}}
        self._order.append(job_id)
        self._next.put_nowait(self._peek())

    def _peek(self) -> JobExecution | None:
        pending = [self.executions[j] for j in self._order
                   if self.executions[j]["status"] in ("QUEUED", "IN_PROGRESS")]
        pending.sort(key=lambda e: (e["status"] != "IN_PROGRESS", e["executionNumber"]))
        return execution_of(pending[0]) if pending else None

    def _check_online(self) -> None:
        if self.offline:
            raise JobsUnavailable("fake Jobs service is offline")

    async def start_next(self, *, step_timeout_min: int | None = None,
                         details: Mapping[str, str] | None = None) -> JobExecution | None:
        self._check_online()
        found = self._peek()
        if found is None:
            return None
        row = self.executions[found.job_id]
        if row["status"] == "QUEUED":
            row.update(status="IN_PROGRESS", versionNumber=row["versionNumber"] + 1)
        return execution_of(row)

    async def describe(self, job_id: str) -> JobExecution | None:
        self._check_online()
        if job_id == wire.NEXT:
            return self._peek()
        row = self.executions.get(job_id)
        return None if row is None else execution_of(row)

    async def update(self, job_id: str, status: str, *, expected_version: int | None,
                     details: Mapping[str, str], step_timeout_min: int | None = None) -> int:
        self._check_online()
        row = self.executions.get(job_id)
        if row is None:
            raise JobsRejected("ResourceNotFound", f"no job {job_id}")
        request = wire.UpdateRequest(status=wire.ExecutionStatus(status),
                                     expectedVersion=expected_version,
                                     statusDetails=dict(details))
        try:
            wire.check_update(wire.ExecutionStatus(row["status"]), row["versionNumber"],
                              request, {"versionNumber": row["versionNumber"]})
        except wire.JobsError as exc:
            raise JobsRejected(exc.code.value, exc.message, row["versionNumber"]) from exc
        before = self._peek()
        row.update(status=status, versionNumber=row["versionNumber"] + 1,
                   statusDetails={**row["statusDetails"], **details})
        after = self._peek()
        if (before and before.job_id) != (after and after.job_id):
            self._next.put_nowait(after)
        return int(row["versionNumber"])

    async def next_changed(self) -> JobExecution | None:
        return await self._next.get()
