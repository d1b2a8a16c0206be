"""The Jobs wire contract (pure): topics both ways, request validation, AWS's update rules;
and the agent's runner over FakeJobsChannel (reports carry expectedVersion)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from edge_agent.firmware_runner import FirmwareRunner, offer_of
from edge_agent.jobs_channel import FakeJobsChannel, JobsRejected, UplinkJobsChannel
from edge_agent.ports import Message
from edge_agent.uplink import FakeUplink
from protocols import jobs
from protocols.errors import InvalidMessage
from tests.fw_helpers import Gateway, make_signer, signed_bundle


@pytest.mark.parametrize(("op", "job_id", "topic"), [
    ("get_pending", None, "$aws/things/gw-1/jobs/get"),
    ("start_next", None, "$aws/things/gw-1/jobs/start-next"),
    ("describe", "$next", "$aws/things/gw-1/jobs/$next/get"),
    ("describe", "fw-1", "$aws/things/gw-1/jobs/fw-1/get"),
    ("update", "fw-1", "$aws/things/gw-1/jobs/fw-1/update"),
    ("notify_next", None, "$aws/things/gw-1/jobs/notify-next"),
])
def test_topics_round_trip(op: jobs.Operation, job_id: str | None, topic: str) -> None:
    assert jobs.request_topic("gw-1", op, job_id) == topic
    parsed = jobs.parse_topic(topic)
    assert (parsed.thing, parsed.op, parsed.job_id, parsed.suffix) == ("gw-1", op, job_id, None)
    if op not in ("notify_next",):
        reply = jobs.parse_topic(jobs.reply_topic(topic, accepted=False))
        assert reply.suffix == "rejected" and reply.op == op


@pytest.mark.parametrize("topic", ["$aws/things/gw-1/jobs", "$aws/things/gw-1/jobs/x/y/z",
                                   "$aws/things/gw-1/jobs/$next/update", "hw/gw-1/status",
                                   "$aws/things/bad name/jobs/get"])
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(InvalidMessage):
        jobs.parse_topic(topic)


def test_requests_are_validated_naming_the_field() -> None:
    with pytest.raises(jobs.JobsError) as info:
        jobs.parse_request("update", b'{"status": "DONE"}')
    assert info.value.code is jobs.JobsErrorCode.INVALID_REQUEST and "status" in str(info.value)
    with pytest.raises(jobs.JobsError) as info:
        jobs.parse_request("start_next", b'{"stepTimeoutInMinutes": 0}')
    assert "stepTimeoutInMinutes" in str(info.value)
    with pytest.raises(jobs.JobsError) as info:
        jobs.parse_request("update", b'{"status": "SUCCEEDED", "statusDetails": {"a b": "x"}}')
    assert "statusDetails" in str(info.value)
    assert jobs.parse_request("get_pending", b"").clientToken is None
    assert jobs.client_token_of(b'{"clientToken": "t"}') == "t"
    assert jobs.client_token_of(b"nope") is None


def test_update_rules() -> None:
    def update(status: str, **kw: object) -> jobs.UpdateRequest:
        return jobs.UpdateRequest(status=jobs.ExecutionStatus(status), **kw)  # type: ignore[arg-type]
    ip = jobs.ExecutionStatus.IN_PROGRESS
    jobs.check_update(ip, 3, update("SUCCEEDED", expectedVersion=3), {})
    for bad, current, code in [
        (update("TIMED_OUT"), ip, jobs.JobsErrorCode.INVALID_REQUEST),
        (update("SUCCEEDED", expectedVersion=2), ip, jobs.JobsErrorCode.VERSION_MISMATCH),
        (update("IN_PROGRESS"), jobs.ExecutionStatus.CANCELED,
         jobs.JobsErrorCode.INVALID_STATE_TRANSITION)]:
        with pytest.raises(jobs.JobsError) as info:
            jobs.check_update(current, 3, bad, {"versionNumber": 3})
        assert info.value.code is code


async def test_uplink_channel_matches_replies_by_client_token() -> None:
    def broker(sent: Message) -> list[Message]:
        token = json.loads(sent.payload)["clientToken"]
        return [Message(sent.topic + "/accepted", json.dumps(
                    {"clientToken": "someone-else", "executionState": {}}).encode()),
                Message(sent.topic + "/rejected", json.dumps(
                    {"clientToken": token, "code": "VersionMismatch", "message": "stale",
                     "executionState": {"versionNumber": 7}}).encode())]
    uplink = FakeUplink(broker)
    await uplink.start()
    channel = UplinkJobsChannel("gw-1", uplink, timeout_s=2)

    async def inbound() -> None:
        while True:
            await channel.on_message(await uplink.receive())
    task = asyncio.create_task(inbound())
    try:
        with pytest.raises(JobsRejected) as info:
            await channel.update("fw-1", "SUCCEEDED", expected_version=6, details={})
        assert (info.value.code, info.value.version) == ("VersionMismatch", 7)
        sent = json.loads(uplink.published[0].payload)
        assert sent["expectedVersion"] == 6 and sent["status"] == "SUCCEEDED"
        await channel.on_message(Message("$aws/things/gw-1/jobs/notify-next", b"not json"))
        assert channel.ignored == 1
    finally:
        task.cancel()


async def test_runner_applies_a_firmware_job_and_reports_with_versions(tmp_path: Path) -> None:
    ks, root = make_signer()
    built = signed_bundle(tmp_path / "rel", ks, "1.1.0")
    payload = built.payload_path.read_bytes()
    gw = Gateway(tmp_path / "gw", root, httpx.Client(transport=httpx.MockTransport(
        lambda _r: httpx.Response(200, content=payload, headers={"ETag": '"x"'}))))
    fake = FakeJobsChannel()
    fake.add("fw-1", {"operation": "firmware_update",
                      "manifest": json.loads(built.manifest_path.read_text()),
                      "url": "http://cloud/p", "blocklist": []})
    fake.add("other", {"operation": "reboot"})
    runner = FirmwareRunner(fake, park_after_restart=False)
    runner.updater = gw.updater
    gw.updater.reporter = runner
    gw.updater.restarter = runner.restarter(lambda _r: _noop())
    await runner.run()  # applies fw-1, then returns for the restart
    assert fake.executions["fw-1"]["status"] == "IN_PROGRESS"
    second = FirmwareRunner(fake, park_after_restart=False, recheck_s=0.01)
    second.updater = gw.restart()
    second.updater.reporter = second
    second.updater.restarter = second.restarter(lambda _r: _noop())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(second.run(), 1.0)  # commits, rejects "other", then idles
    assert fake.executions["fw-1"]["status"] == "SUCCEEDED"
    assert fake.executions["other"]["status"] == "REJECTED"
    assert gw.running_version() == "1.1.0"
    job = await fake.describe("fw-1")
    assert job is not None and offer_of(job) is not None


async def _noop() -> None:
    return None
