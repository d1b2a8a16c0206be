"""``AwsIotJobsChannel``: the :class:`~edge_agent.ports.JobsChannel` port on awsiotsdk's own
``IotJobsClientV2``, for ``mqtt.transport = "awsiot"`` (AWS IoT Core's own device client).

It shares the :class:`~edge_agent.awsiot_uplink.AwsIotUplink`'s MQTT 5 client: the V2 client
subscribes to the reply topics itself and matches replies by ``clientToken``, so these topics
are not on the agent's inbound router. awsiotsdk resolves its futures on awscrt's threads;
every call is awaited through ``asyncio.wrap_future`` and notify-next events are bridged into
the event loop, so nothing blocks it. Errors map onto the port's: a modeled rejection is
``JobsRejected`` with AWS's code and the execution's version, anything else (timeout,
disconnected) is ``JobsUnavailable``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from awscrt import mqtt5, mqtt_request_response
from awsiot import ServiceStreamOptions, V2ServiceException, iotjobs

from edge_agent.jobs_channel import JobsRejected, JobsUnavailable
from edge_agent.ports import JobExecution
from protocols import jobs as wire

__all__ = ["AwsIotJobsChannel", "execution_from_sdk"]

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_S = 10.0
T = TypeVar("T")


def execution_from_sdk(data: iotjobs.JobExecutionData) -> JobExecution:
    """The port's ``JobExecution`` from awsiotsdk's model."""
    document = data.job_document or {}
    return JobExecution(job_id=str(data.job_id), status=str(data.status),
                        version=int(data.version_number or 0),
                        execution_number=int(data.execution_number or 0),
                        document=dict(document),
                        status_details={str(k): str(v)
                                        for k, v in (data.status_details or {}).items()})


class AwsIotJobsChannel:
    """Create it before the MQTT client starts; :meth:`open` (on the event loop) opens the
    notify-next stream."""

    def __init__(self, thing: str, client: mqtt5.Client, *,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.thing = thing
        self._timeout_s = timeout_s
        self._jobs = iotjobs.IotJobsClientV2(client, mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=4, max_streaming_subscriptions=2,
            operation_timeout_in_seconds=max(1, int(timeout_s))))
        self._next: asyncio.Queue[JobExecution | None] = asyncio.Queue(maxsize=1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None  # awsiot's StreamingOperation: kept alive while we listen

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stream = self._jobs.create_next_job_execution_changed_stream(
            iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=self.thing),
            ServiceStreamOptions(incoming_event_listener=self._on_next_changed))
        self._stream.open()

    # -- JobsChannel -------------------------------------------------------------------

    async def start_next(self, *, step_timeout_min: int | None = None,
                         details: Mapping[str, str] | None = None) -> JobExecution | None:
        reply = await self._call(self._jobs.start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(
                thing_name=self.thing, step_timeout_in_minutes=step_timeout_min,
                status_details=dict(details) if details is not None else None)))
        return execution_from_sdk(reply.execution) if reply.execution is not None else None

    async def describe(self, job_id: str) -> JobExecution | None:
        try:
            reply = await self._call(self._jobs.describe_job_execution(
                iotjobs.DescribeJobExecutionRequest(thing_name=self.thing, job_id=job_id,
                                                    include_job_document=True)))
        except JobsRejected as exc:
            if exc.code == wire.JobsErrorCode.RESOURCE_NOT_FOUND:
                return None
            raise
        return execution_from_sdk(reply.execution) if reply.execution is not None else None

    async def update(self, job_id: str, status: str, *, expected_version: int | None,
                     details: Mapping[str, str], step_timeout_min: int | None = None) -> int:
        reply = await self._call(self._jobs.update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=self.thing, job_id=job_id, status=status,
                expected_version=expected_version, status_details=dict(details),
                step_timeout_in_minutes=step_timeout_min, include_job_execution_state=True)))
        state = reply.execution_state
        if state is None or state.version_number is None:
            raise JobsUnavailable(f"update of {job_id} was accepted without its new version")
        return int(state.version_number)

    async def next_changed(self) -> JobExecution | None:
        return await self._next.get()

    # -- plumbing ----------------------------------------------------------------------

    async def _call(self, future: concurrent.futures.Future[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout_s + 1):
                return await asyncio.wrap_future(future)
        except TimeoutError as exc:
            raise JobsUnavailable(f"no Jobs reply within {self._timeout_s:.0f}s") from exc
        except V2ServiceException as exc:
            error = exc.modeled_error
            if not isinstance(error, iotjobs.V2ErrorResponse) or error.code is None:
                raise JobsUnavailable(f"Jobs request failed: {exc.inner_error or exc}") from exc
            state = error.execution_state
            version = state.version_number if state is not None else None
            raise JobsRejected(str(error.code), str(error.message),
                               int(version) if version is not None else None) from exc

    def _on_next_changed(self, event: iotjobs.NextJobExecutionChangedEvent) -> None:
        """awscrt's thread: hand the newest next execution to the event loop."""
        execution = execution_from_sdk(event.execution) if event.execution else None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._notify, execution)

    def _notify(self, execution: JobExecution | None) -> None:
        if self._next.full():
            self._next.get_nowait()  # only the newest next execution matters
        self._next.put_nowait(execution)
