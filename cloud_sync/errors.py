"""The one error root of the cloud service."""


class CloudSyncError(Exception):
    """Root of every error the cloud service raises."""
