"""Signed update bundles and the device-side A/B updater.

Bundles: a payload plus a manifest in a DSSE envelope signed with Ed25519 (``envelope``,
``keys``, ``manifest``, ``trust``); ``policy.verify_manifest`` is everything a device checks
before it installs. The updater (``updater``) downloads with resume, installs into the inactive
slot of a ``SlotBackend`` and commits only after a health check. ``rollout`` holds the pure
staged-rollout maths the cloud uses. Nothing here imports ``cloud_sync`` or ``edge_agent``.
"""

from firmware_update.errors import BadInput, BundleRejected, FirmwareError, RejectReason

__all__ = ["BadInput", "BundleRejected", "FirmwareError", "RejectReason"]
