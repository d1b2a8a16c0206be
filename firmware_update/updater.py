"""``DeviceUpdater``: one job from offer to commit or rollback, resumable in every phase.

Phases (persisted in ``state.json`` before the work they name starts)::

    offer --verify--> DOWNLOADING --hash ok--> INSTALLING --slot written--> TRIAL
    TRIAL --(restart into new slot) health ok--> COMMITTING --> IDLE (SUCCEEDED)
    TRIAL --health failed / boots used up / never started--> ROLLING_BACK --> IDLE (FAILED)
    offer --verification failed--> IDLE (REJECTED, nothing downloaded or installed)

:meth:`resume` runs at every start of the process and finishes whatever the state says; each
step is idempotent, so a SIGKILL or power cut anywhere ends in a working slot: before the
switch the old slot is still primary; after it, the new slot runs under a boot counter and is
committed only after its health check passes within the deadline, else the old one returns.
Outcomes are kept until the :class:`JobReporter` got them through.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from firmware_update.download import PayloadDownloader, discard
from firmware_update.errors import BundleRejected, FirmwareError, RejectReason, SlotError
from firmware_update.manifest import Manifest
from firmware_update.policy import DeviceFacts, check_payload, verify_manifest
from firmware_update.ports import (
    Clock,
    HealthProbe,
    HealthReport,
    JobReporter,
    Restarter,
    SlotBackend,
)
from firmware_update.semver import parse_version
from firmware_update.state import DeviceRecord, Outcome, Phase, StateStore, UpdateState
from firmware_update.trust import TrustRoot

__all__ = ["DeviceIdentity", "DeviceUpdater", "JobOffer", "UpdaterSettings"]

log = logging.getLogger(__name__)
MAX_DETAIL = 1000  # AWS Jobs statusDetails values are at most 1024 characters


@dataclass(frozen=True)
class DeviceIdentity:
    product: str  # e.g. "homewatt-agent"
    hardware: str  # e.g. "rpi4"


@dataclass(frozen=True)
class UpdaterSettings:
    trial_boots: int = 3  # starts of the new slot allowed before it is given up
    health_deadline_s: float = 300.0  # per start of the new slot
    health_interval_s: float = 5.0


@dataclass(frozen=True)
class JobOffer:
    """A firmware job as the agent's Jobs client hands it over."""

    job_id: str
    manifest: bytes  # the signed envelope, verified before anything else
    url: str
    blocklist: tuple[str, ...] = ()


class DeviceUpdater:
    def __init__(self, *, store: StateStore, slots: SlotBackend, root: TrustRoot,
                 identity: DeviceIdentity, health: HealthProbe, reporter: JobReporter,
                 restarter: Restarter, downloader: PayloadDownloader, clock: Clock,
                 settings: UpdaterSettings | None = None) -> None:
        self.store = store
        self.slots = slots
        self.root = root
        self.identity = identity
        self.health = health
        self.reporter = reporter
        self.restarter = restarter
        self.downloader = downloader
        self.clock = clock
        self.settings = settings or UpdaterSettings()
        self.state = store.load()
        self.device = store.load_device() or self._first_record()

    def _first_record(self) -> DeviceRecord:
        version = self.slots.slot_version(self.slots.booted())
        record = DeviceRecord(minimum=version, installed=version)
        self.store.save_device(record)
        return record

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def installed_version(self) -> str | None:
        return self.device.installed

    def _save(self) -> None:
        self.store.save(self.state)

    # -- entry points ----------------------------------------------------------------------

    async def resume(self) -> Phase:
        """Finish the job in flight (called at every start); returns the phase reached."""
        phase = self.state.phase
        if phase is Phase.DOWNLOADING:
            await self._download_and_install()
        elif phase is Phase.INSTALLING:
            await self._install()
        elif phase is Phase.TRIAL:
            await self._trial()
        elif phase is Phase.COMMITTING:
            await self._commit()
        elif phase is Phase.ROLLING_BACK:
            await self._roll_back()
        await self.flush_report()
        return self.state.phase

    async def apply(self, offer: JobOffer) -> Phase:
        """Take a new job: verify, download, install, switch and restart into it."""
        if self.state.phase is not Phase.IDLE:
            if self.state.job_id == offer.job_id:
                return await self.resume()
            raise FirmwareError(f"busy with job {self.state.job_id} ({self.state.phase})")
        self.device.blocklist = sorted(set(offer.blocklist))
        try:
            manifest = verify_manifest(offer.manifest, self.root, self._facts())
        except BundleRejected as exc:
            log.warning("job %s rejected: %s", offer.job_id, exc)
            await self._finish(offer.job_id, Outcome("REJECTED", exc.reason.value, exc.detail,
                                                     _claimed_version(offer.manifest)))
            await self.flush_report()
            return self.state.phase
        self._seen(manifest)
        booted = self.slots.booted()
        self.state = UpdateState(
            phase=Phase.DOWNLOADING, job_id=offer.job_id, manifest=offer.manifest.decode(),
            url=offer.url, version=manifest.version, from_slot=booted,
            to_slot=self.slots.other(booted), from_version=self.device.installed)
        self._save()
        await self._progress("downloading")
        await self._download_and_install()
        await self.flush_report()
        return self.state.phase

    async def flush_report(self) -> bool:
        """Send a kept outcome; ``True`` when nothing is left to send."""
        outcome, job = self.state.outcome, self.state.outcome_job
        if outcome is None or job is None:
            return True
        details = {"reason": outcome.reason, "detail": outcome.detail[:MAX_DETAIL],
                   "version": outcome.version,
                   "installed": self.device.installed or "unknown"}
        try:
            await self.reporter.report(job, outcome.status, details)
        except FirmwareError as exc:
            log.warning("job %s outcome %s not reported yet: %s", job, outcome.status, exc)
            return False
        self.state.outcome = self.state.outcome_job = None
        self._save()
        return True

    # -- phases ----------------------------------------------------------------------------

    def _manifest(self) -> Manifest:
        assert self.state.manifest is not None
        # re-verified from the stored envelope: state.json is not trusted as a manifest
        return verify_manifest(self.state.manifest.encode(), self.root,
                               self._facts(recheck=True))

    async def _download_and_install(self) -> None:
        try:
            manifest = self._manifest()
            assert self.state.url is not None
            await asyncio.to_thread(self.downloader.fetch, self.state.url,
                                    self.store.download_path, manifest.payload.size,
                                    manifest.payload.sha256)
        except BundleRejected as exc:
            discard(self.store.download_path)
            status = "FAILED" if exc.reason is RejectReason.NO_SPACE else "REJECTED"
            await self._abandon(status, exc.reason.value, exc.detail)
            return
        except FirmwareError as exc:
            await self._abandon("FAILED", "download", str(exc))
            return
        self.state.phase = Phase.INSTALLING
        self._save()
        await self._install()

    async def _install(self) -> None:
        try:
            manifest = self._manifest()
            size = self.store.download_path.stat().st_size
            digest = await asyncio.to_thread(_sha256, self.store.download_path)
            check_payload(manifest, size, digest)
            await self._progress("installing")
            slot = await asyncio.to_thread(self.slots.install, self.store.download_path,
                                           manifest)
        except BundleRejected as exc:
            discard(self.store.download_path)
            await self._abandon("REJECTED", exc.reason.value, exc.detail)
            return
        except (FirmwareError, OSError) as exc:
            discard(self.store.download_path)
            await self._abandon("FAILED", "install", str(exc))
            return
        self.state.to_slot = slot
        self.state.phase = Phase.TRIAL
        self.state.boots_left = self.settings.trial_boots
        self.state.switched = False
        self._save()
        discard(self.store.download_path)
        await self._switch()

    async def _switch(self) -> None:
        assert self.state.to_slot is not None
        self.slots.activate(self.state.to_slot)
        self.state.switched = True
        self._save()
        await self._progress("restarting", {"slot": self.state.to_slot})
        await self.restarter.restart(f"trial of {self.state.version} in slot "
                                     f"{self.state.to_slot}")

    async def _trial(self) -> None:
        booted = self.slots.booted()
        if booted != self.state.to_slot:
            if not self.state.switched:
                await self._switch()  # killed between persisting TRIAL and the switch
                return
            await self._decide_rollback("did_not_start", "the new slot never started: the "
                                        "boot fell back to the old slot")
            return
        self.state.boots_left -= 1
        self._save()
        if self.state.boots_left < 0:
            await self._decide_rollback("trial_boots", f"the new version was started "
                                        f"{self.settings.trial_boots} times without passing "
                                        "its health check (crash or hang)")
            return
        await self._progress("health_check")
        report = await self._health_check()
        if report.ok:
            self.state.phase = Phase.COMMITTING
            self._save()
            await self._commit()
        else:
            await self._decide_rollback("health_check", report.summary())

    async def _health_check(self) -> HealthReport:
        deadline = self.clock.monotonic() + self.settings.health_deadline_s
        while True:
            report = await self.health.check()
            if report.ok or self.clock.monotonic() >= deadline:
                return report
            await self.clock.sleep(self.settings.health_interval_s)

    async def _commit(self) -> None:
        self.slots.mark_good()
        version = self.state.version
        self.device.installed = version
        self.device.minimum = version  # anti-rollback: never back to or below this
        self.store.save_device(self.device)
        log.info("committed %s in slot %s", version, self.state.to_slot)
        await self._finish(self.state.job_id, Outcome("SUCCEEDED", "committed",
                                                      f"running {version}", version or ""))

    async def _decide_rollback(self, reason: str, detail: str) -> None:
        log.error("rolling back %s: %s", self.state.version, detail)
        self.state.phase = Phase.ROLLING_BACK
        self.state.rollback_reason, self.state.rollback_detail = reason, detail
        self._save()
        await self._roll_back()

    async def _roll_back(self) -> None:
        assert self.state.to_slot is not None
        if self.slots.booted() == self.state.to_slot:
            try:
                self.slots.mark_bad(self.state.to_slot)
            except SlotError as exc:
                log.error("rollback step failed, will retry at next start: %s", exc)
                raise
            await self.restarter.restart(f"rollback from {self.state.version}")
            return
        if self.slots.primary() == self.state.to_slot:
            self.slots.mark_bad(self.state.to_slot)
        await self._finish(self.state.job_id, Outcome(
            "FAILED", self.state.rollback_reason or "rollback",
            f"rolled back to {self.device.installed}: {self.state.rollback_detail}",
            self.state.version or ""))

    async def _abandon(self, status: str, reason: str, detail: str) -> None:
        """Give up before the switch: the old slot never stopped being primary."""
        await self._finish(self.state.job_id, Outcome(status, reason, detail,
                                                      self.state.version or ""))

    async def _finish(self, job_id: str | None, outcome: Outcome) -> None:
        self.state = UpdateState(outcome=outcome, outcome_job=job_id)
        self._save()

    async def _progress(self, step: str, extra: dict[str, str] | None = None) -> None:
        if self.state.job_id is None:
            return
        try:
            await self.reporter.report(self.state.job_id, "IN_PROGRESS",
                                       {"step": step, "version": self.state.version or "",
                                        **(extra or {})})
        except FirmwareError as exc:  # progress is best effort; outcomes are not
            log.info("progress report %s not sent: %s", step, exc)

    # -- facts -----------------------------------------------------------------------------

    def _facts(self, *, recheck: bool = False) -> DeviceFacts:
        now = datetime.fromtimestamp(self.clock.now_ms() / 1000, UTC)
        if self.device.newest_created:
            now = max(now, datetime.fromisoformat(self.device.newest_created))
        installed = self.device.installed
        minimum = self.device.minimum
        if recheck:
            # resuming our own accepted job: expiry and minimum were checked at the offer;
            # re-check signature, product, hardware and blocklist only
            minimum = None
            now = datetime.fromtimestamp(0, UTC)
        return DeviceFacts(
            product=self.identity.product, kind=self.slots.kind,
            hardware=self.identity.hardware, now=now,
            installed=parse_version(installed) if installed else None,
            minimum=parse_version(minimum) if minimum else None,
            blocklist=frozenset(self.device.blocklist))

    def _seen(self, manifest: Manifest) -> None:
        newest = self.device.newest_created
        if newest is None or manifest.created > datetime.fromisoformat(newest):
            self.device.newest_created = manifest.created.isoformat()
        self.store.save_device(self.device)


def _sha256(path: Path) -> str:
    from firmware_update.bundle import hash_file

    return hash_file(path)[1]


def _claimed_version(raw: bytes) -> str:
    """For the report only: what the (untrusted) manifest says its version is."""
    try:
        from firmware_update.envelope import Envelope
        from firmware_update.manifest import parse_manifest

        return parse_manifest(Envelope.from_bytes(raw).payload).version
    except FirmwareError:
        return "unknown"
