"""The firmware application layer: upload checks, rollout creation, the rollout scheduler.

``FirmwareService`` checks what REST hands it (signature against the fleet's trust root,
expiry, the blocklist), stores payloads content-addressed under ``firmware_dir``, resolves a
rollout's targets and builds its job document. ``RolloutScheduler`` is the ``WorkerThread``
that ticks active rollouts every ``rollout_tick_s``; tests call :meth:`FirmwareService.tick`
with their own clock instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud_sync.db.firmware_store import Bundle, FirmwareConflict, SqlFirmwareStore
from cloud_sync.db.rollout_store import RolloutTick, SqlRolloutStore
from cloud_sync.errors import CloudSyncError, NotFound, StorageUnavailable
from cloud_sync.firmware.models import RolloutIn
from cloud_sync.worker_thread import WorkerThread
from firmware_update.envelope import MANIFEST_TYPE, Envelope, verified_payload
from firmware_update.errors import BundleRejected
from firmware_update.manifest import Manifest, parse_manifest
from firmware_update.rollout import select_percentage
from firmware_update.trust import TrustRoot

__all__ = ["FirmwareService", "PayloadRejected", "RolloutScheduler"]

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


class PayloadRejected(CloudSyncError):
    """An upload that is not what the manifest signed (422) or a manifest devices would
    refuse; ``reason`` is the firmware reject code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FirmwareService:
    bundles: SqlFirmwareStore
    rollouts: SqlRolloutStore
    payload_dir: Path
    public_url: str
    trust_root: TrustRoot | None
    now_ms: Callable[[], int]
    wake_jobs: Callable[[], None] = lambda: None

    # -- bundles ---------------------------------------------------------------------------

    def add_manifest(self, raw: bytes) -> tuple[Bundle, bool]:
        """Verify and store an uploaded signed manifest; ``PayloadRejected`` when devices
        would refuse it (untrusted signature, expired)."""
        try:
            envelope = Envelope.from_bytes(raw)
            if self.trust_root is None:
                payload = envelope.payload  # no root configured: devices still verify
            else:
                payload = verified_payload(envelope, MANIFEST_TYPE,
                                           self.trust_root.public_keys(),
                                           self.trust_root.threshold)
            manifest = parse_manifest(payload)
        except BundleRejected as exc:
            raise PayloadRejected(exc.reason.value, str(exc)) from exc
        if manifest.is_expired(datetime.fromtimestamp(self.now_ms() / 1000, UTC)):
            raise PayloadRejected("expired", f"manifest expired at {manifest.expires}; "
                                  "re-sign it with a later expiry")
        return self.bundles.add_bundle(manifest, json.dumps(envelope.to_json()), self.now_ms())

    def payload_path(self, bundle: Bundle) -> Path:
        return self.payload_dir / f"{bundle.sha256}.payload"

    def store_payload(self, bundle_id: str, chunks: Iterable[bytes]) -> Bundle:
        """Stream an upload to disk, enforcing the signed size and hash; marks it ready."""
        bundle = self.require_bundle(bundle_id)
        self.payload_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.payload_dir / f".{bundle.sha256}.{os.getpid()}.upload"
        digest, size = hashlib.sha256(), 0
        try:
            with tmp.open("wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > bundle.size:
                        raise PayloadRejected("payload_length", f"upload exceeds the signed "
                                              f"{bundle.size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size != bundle.size:
                raise PayloadRejected("payload_length", f"upload is {size} bytes, the "
                                      f"manifest signed {bundle.size}")
            if digest.hexdigest() != bundle.sha256:
                raise PayloadRejected("payload_hash", "upload's sha256 differs from the "
                                      "signed one")
            os.replace(tmp, self.payload_path(bundle))
        finally:
            tmp.unlink(missing_ok=True)
        self.bundles.mark_ready(bundle_id)
        return self.require_bundle(bundle_id)

    def require_bundle(self, bundle_id: str) -> Bundle:
        bundle = self.bundles.bundle(bundle_id)
        if bundle is None:
            raise NotFound(f"bundle {bundle_id!r} does not exist")
        return bundle

    # -- rollouts --------------------------------------------------------------------------

    def create_rollout(self, request: RolloutIn) -> str:
        bundle = self.require_bundle(request.bundle_id)
        if bundle.status != "ready":
            raise FirmwareConflict(f"bundle {bundle.bundle_id} has no payload yet; PUT it to "
                                   f"/api/v1/firmware/bundles/{bundle.bundle_id}/payload")
        now = self.now_ms()
        if bundle.expires_at <= now:
            raise FirmwareConflict(f"bundle {bundle.bundle_id} has expired; devices would "
                                   "refuse it")
        blocked = self.bundles.blocklist()
        if bundle.version in blocked:
            raise FirmwareConflict(f"version {bundle.version} is blocklisted: "
                                   f"{blocked[bundle.version]}")
        targets = self._targets(request, bundle)
        if not targets:
            raise FirmwareConflict("the target selects no gateway")
        manifest = json.loads(bundle.manifest)

        def document(token: str) -> dict[str, Any]:
            return {"operation": "firmware_update", "manifest": manifest,
                    "url": f"{self.public_url.rstrip('/')}/api/v1/firmware/bundles/"
                           f"{bundle.bundle_id}/payload?token={token}",
                    "blocklist": sorted(blocked)}
        rollout_id = self.rollouts.create(request, bundle, targets, document, now)
        self.tick()
        return rollout_id

    def _targets(self, request: RolloutIn, bundle: Bundle) -> list[str]:
        if request.target.group is not None:
            members = self.bundles.group(request.target.group)
            return select_percentage(members, 100, bundle.bundle_id)
        assert request.target.percentage is not None
        return select_percentage(self.bundles.all_gateways(), request.target.percentage,
                                 bundle.bundle_id)

    def block(self, version: str, reason: str) -> list[str]:
        """Blocklist ``version`` and cancel its live rollouts; returns their ids."""
        now = self.now_ms()
        self.bundles.block(version, reason, now)
        canceled = self.rollouts.cancel_version(version, now, f"blocklisted: {reason}")
        self.wake_jobs()
        return canceled

    def tick(self, now: int | None = None) -> list[RolloutTick]:
        """Advance every active rollout once (the scheduler's step; tests pass ``now``)."""
        at = self.now_ms() if now is None else now
        results = self.rollouts.tick(at)
        for result in results:
            self.bundles.record_versions(self.rollouts.finished_reports(result.rollout_id), at)
        if any(r.notified or r.aborted for r in results):
            self.wake_jobs()
        return results

    def manifest_of(self, bundle: Bundle) -> Manifest:
        return parse_manifest(Envelope.from_json(json.loads(bundle.manifest)).payload)


class RolloutScheduler(WorkerThread):
    thread_name = "rollouts"

    def __init__(self, service: FirmwareService, interval_s: float) -> None:
        super().__init__()
        self.service = service
        self.interval_s = interval_s

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.service.tick()
            except StorageUnavailable as exc:
                log.warning("rollout tick skipped: %s", exc)
            except Exception:  # supervisor: a bad rollout must not stop the scheduler
                log.exception("rollout tick failed")


