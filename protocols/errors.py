"""The one error root of the wire contract."""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error raised by ``protocols``."""


class InvalidMessage(ProtocolError):
    """A message (payload, topic, register image) broke the contract.

    ``field`` names the offending field as a dotted path (``readings.3.ts``) so a caller can
    log one line that tells the sender what to fix.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason
