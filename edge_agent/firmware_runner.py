"""``FirmwareRunner``: the agent's side of firmware jobs, between Jobs and the updater.

At start it lets the updater finish what a restart interrupted (a trial boot is health-checked
here, then committed or rolled back), then asks Jobs for the next execution and hands a
``firmware_update`` document to the updater; it waits for notify-next between jobs (and
re-asks every ``recheck_s``, in case a notification was lost). It is also the updater's
:class:`~firmware_update.ports.JobReporter`: each report is an ``UpdateJobExecution`` with
``expectedVersion`` (learnt from the last reply, or from a describe after a restart).

Job document (what the cloud's rollouts publish)::

    {"operation": "firmware_update", "manifest": {<signed envelope>}, "url": "https://...",
     "blocklist": ["1.3.0", ...]}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

from edge_agent.jobs_channel import JobsRejected, JobsUnavailable
from edge_agent.ports import JobExecution, JobsChannel
from firmware_update.errors import FirmwareError
from firmware_update.ports import Restarter
from firmware_update.updater import DeviceUpdater, JobOffer

__all__ = ["FIRMWARE_OPERATION", "FirmwareRunner"]

log = logging.getLogger(__name__)
FIRMWARE_OPERATION = "firmware_update"


class FirmwareRunner:
    def __init__(self, channel: JobsChannel, *, step_timeout_min: int = 60,
                 recheck_s: float = 600.0, park_after_restart: bool = True) -> None:
        """``park_after_restart``: once a restart is under way, :meth:`run` waits forever
        instead of returning, so a supervisor never runs it again in the old process (an
        in-process simulation passes False and starts a new runner itself)."""
        self.channel = channel
        self.step_timeout_min = step_timeout_min
        self.recheck_s = recheck_s
        self.park_after_restart = park_after_restart
        self.updater: DeviceUpdater | None = None  # set by the agent (it reports through us)
        self._versions: dict[str, int] = {}
        self.restart_reason: str | None = None
        self.restarted = asyncio.Event()

    def restarter(self, action: Callable[[str], Awaitable[None]]) -> Restarter:
        """The updater's ``Restarter``: run ``action`` (exit for systemd, reboot) and stop
        this runner, so nothing acts on the old slot once a restart is under way."""
        runner = self

        class _Restart:
            async def restart(self, reason: str) -> None:
                runner.restart_reason = reason
                runner.restarted.set()
                await action(reason)
        return _Restart()

    def close(self) -> None:
        """Release the updater's HTTP connections (the agent calls it on stop)."""
        if self.updater is not None:
            self.updater.downloader.close()

    # -- JobReporter ---------------------------------------------------------------------

    async def report(self, job_id: str, status: str, details: dict[str, str]) -> None:
        for _attempt in range(2):
            version = self._versions.get(job_id)
            if version is None:
                version = await self._describe_version(job_id)
            try:
                self._versions[job_id] = await self.channel.update(
                    job_id, status, expected_version=version, details=details,
                    step_timeout_min=self.step_timeout_min if status == "IN_PROGRESS" else None)
            except JobsUnavailable as exc:
                raise FirmwareError(f"Jobs unreachable: {exc}") from exc
            except JobsRejected as exc:
                if exc.code == "VersionMismatch":
                    self._versions.pop(job_id, None)
                    continue  # someone else moved it: learn the version and try once more
                if exc.code in ("InvalidStateTransition", "ResourceNotFound"):
                    # the execution ended on the cloud's side (canceled, timed out): nothing
                    # left to tell it; the device's own state stays what it is
                    log.warning("job %s no longer takes updates: %s", job_id, exc)
                    return
                raise FirmwareError(f"Jobs refused the update: {exc}") from exc
            return
        raise FirmwareError(f"job {job_id}: version kept moving; will retry")

    async def _describe_version(self, job_id: str) -> int | None:
        try:
            found = await self.channel.describe(job_id)
        except (JobsUnavailable, JobsRejected) as exc:
            raise FirmwareError(f"cannot read job {job_id}: {exc}") from exc
        return None if found is None else found.version

    # -- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Supervised by the agent; never returns while ``park_after_restart``."""
        await self._run()
        if self.park_after_restart:
            await asyncio.Event().wait()  # the process is about to be replaced

    async def _run(self) -> None:
        updater = self._require_updater()
        await updater.resume()
        while not self.restarted.is_set():
            await updater.flush_report()
            try:
                job = await self.channel.start_next(step_timeout_min=self.step_timeout_min)
            except JobsUnavailable as exc:
                log.info("Jobs not reachable (%s); asking again later", exc)
                job = None
            if job is not None:
                await self.handle(job)
                continue
            if self.restarted.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.recheck_s):
                    await self.channel.next_changed()

    async def handle(self, job: JobExecution) -> None:
        self._versions[job.job_id] = job.version
        offer = offer_of(job)
        if offer is None:
            await self.report(job.job_id, "REJECTED", {
                "reason": "unsupported", "detail": "this agent runs only firmware_update jobs "
                "with manifest and url"})
            return
        await self._require_updater().apply(offer)

    def _require_updater(self) -> DeviceUpdater:
        if self.updater is None:
            raise FirmwareError("firmware runner has no updater")
        return self.updater


def offer_of(job: JobExecution) -> JobOffer | None:
    """The updater's offer from a job document; ``None`` when it is not a firmware job."""
    doc = job.document
    manifest, url, blocklist = doc.get("manifest"), doc.get("url"), doc.get("blocklist", [])
    if doc.get("operation") != FIRMWARE_OPERATION or not isinstance(manifest, dict) \
            or not isinstance(url, str) or not isinstance(blocklist, list):
        return None
    return JobOffer(job.job_id, json.dumps(manifest).encode(), url,
                    tuple(str(v) for v in blocklist))
