"""The one error root of the cloud service."""

from __future__ import annotations


class CloudSyncError(Exception):
    """Root of every error the cloud service raises."""


class SettingsError(CloudSyncError):
    """A setting is invalid; ``key`` names it and the message says the fix."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class StorageUnavailable(CloudSyncError):
    """The database did not answer (down, timed out, or its circuit breaker is open).

    ``retry_after_s`` is how long a caller should wait before trying again; the REST layer
    turns it into ``503`` with ``Retry-After``.
    """

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BrokerUnavailable(CloudSyncError):
    """The MQTT broker is not connected or its circuit breaker is open."""


class NotFound(CloudSyncError):
    """A named resource (gateway, dead letter) does not exist, or the caller may not see it
    (the API answers both with 404, so existence never leaks)."""


class Forbidden(CloudSyncError):
    """The caller may see the resource but not do this to it (403)."""


class Conflict(CloudSyncError):
    """The request clashes with what exists (an e-mail already registered, a gateway of
    another home): 409."""


class BadInput(CloudSyncError):
    """A request field is invalid; the message names it and the fix (422)."""


class ReplayRejected(CloudSyncError):
    """A dead letter replayed but its payload is still bad; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
