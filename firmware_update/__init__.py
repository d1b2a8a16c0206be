"""Signed update bundles and the device-side A/B updater (issue 7 builds it out)."""

from firmware_update.errors import FirmwareError

__all__ = ["FirmwareError"]
