"""awsiotsdk's own ``IotJobsClientV2`` (awscrt MQTT 5, over plain TCP and over mutual TLS with
the generated broker config and ACLs) drives our Jobs service through a real Mosquitto:
pending list, start-next, describe ``$next``, updates with ``expectedVersion`` (accepted and
VersionMismatch), terminal-state refusal, notify-next."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from awsiot import ServiceStreamOptions, V2ServiceException, iotjobs

from cloud_sync.bootstrap import CloudService
from tests.integration.awscrt_setup import aws_setup, request_response_options
from tests.integration.jobs_fixtures import jobs_broker, jobs_of, jobs_store

__all__ = ["jobs_broker"]
pytestmark = pytest.mark.integration
THING = "gw-1"
T0 = 1_795_000_000_000


@dataclass
class Setup:
    cloud: CloudService
    jobs: iotjobs.IotJobsClientV2


@pytest.fixture(params=["tcp", "mutual-tls"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    for running in aws_setup(request, tmp_path, THING, "jobs_broker"):
        yield Setup(running.cloud,
                    iotjobs.IotJobsClientV2(running.client, request_response_options()))


def result(future: Future[Any]) -> Any:
    return future.result(timeout=15)


def rejected(future: Future[Any]) -> iotjobs.V2ErrorResponse:
    with pytest.raises(V2ServiceException) as info:
        future.result(timeout=15)
    assert info.value.modeled_error is not None, info.value.inner_error
    return info.value.modeled_error


def test_iot_jobs_client_v2_drives_our_jobs_service(setup: Setup) -> None:
    jobs_cloud, aws_client = setup.cloud, setup.jobs
    store = jobs_store(jobs_cloud)
    events: queue.Queue[iotjobs.NextJobExecutionChangedEvent] = queue.Queue()
    stream = aws_client.create_next_job_execution_changed_stream(
        iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=THING),
        ServiceStreamOptions(incoming_event_listener=events.put))
    stream.open()
    # the stream's subscription is in place once a first request round-trips
    pending = result(aws_client.get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=THING)))
    assert pending.in_progress_jobs == [] and pending.queued_jobs == []

    store.create_job("fw-1", {"operation": "firmware_update", "version": "1.1.0"}, T0)
    store.queue_executions("fw-1", [THING], T0)
    jobs_of(jobs_cloud).wake()
    event = events.get(timeout=10)
    assert event.execution.job_id == "fw-1" and event.execution.status == "QUEUED"
    assert event.execution.job_document == {"operation": "firmware_update", "version": "1.1.0"}

    pending = result(aws_client.get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=THING)))
    assert [j.job_id for j in pending.queued_jobs] == ["fw-1"]

    started_ = result(aws_client.start_next_pending_job_execution(
        iotjobs.StartNextPendingJobExecutionRequest(
            thing_name=THING, step_timeout_in_minutes=30,
            status_details={"step": "downloading"})))
    execution = started_.execution
    assert (execution.job_id, execution.status, execution.version_number) == \
        ("fw-1", "IN_PROGRESS", 2)
    assert execution.job_document["version"] == "1.1.0"
    assert execution.status_details == {"step": "downloading"}

    described = result(aws_client.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
        thing_name=THING, job_id="$next", include_job_document=True)))
    assert described.execution.job_id == "fw-1" and described.execution.version_number == 2

    updated = result(aws_client.update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=THING, job_id="fw-1", status="IN_PROGRESS", expected_version=2,
        status_details={"step": "installing"}, include_job_execution_state=True)))
    assert updated.execution_state.version_number == 3
    assert updated.execution_state.status_details == {"step": "installing"}

    stale = rejected(aws_client.update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=THING, job_id="fw-1", status="SUCCEEDED", expected_version=2)))
    assert stale.code == "VersionMismatch"
    assert stale.execution_state.version_number == 3 and stale.execution_state.status == \
        "IN_PROGRESS"

    done = result(aws_client.update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=THING, job_id="fw-1", status="SUCCEEDED", expected_version=3,
        include_job_document=True)))
    assert done.job_document["version"] == "1.1.0"
    event = events.get(timeout=10)  # nothing is next any more
    assert event.execution is None

    terminal = rejected(aws_client.update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=THING, job_id="fw-1", status="IN_PROGRESS")))
    assert terminal.code == "InvalidStateTransition"
    missing = rejected(aws_client.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
        thing_name=THING, job_id="nope")))
    assert missing.code == "ResourceNotFound"
    none_left = result(aws_client.start_next_pending_job_execution(
        iotjobs.StartNextPendingJobExecutionRequest(thing_name=THING)))
    assert none_left.execution is None
    assert store.execution("fw-1", THING)["status"] == "SUCCEEDED"
    del stream  # closed when collected (awscrt has no explicit close)
