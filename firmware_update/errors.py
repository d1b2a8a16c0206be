"""The one error root of the firmware updater."""


class FirmwareError(Exception):
    """Root of every error raised by ``firmware_update``."""
