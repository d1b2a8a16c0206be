"""W3C Trace Context ``traceparent`` values, parsed and formatted (pure, no OpenTelemetry).

A ``traceparent`` rides in command, ack and telemetry payloads so one trace id follows a
command across processes: ``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``. Parsing is
lenient about case but strict about shape: a malformed or all-zero value parses to ``None``
(the receiver then starts a new trace instead of failing the message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["TraceParent", "format_traceparent", "parse_traceparent", "trace_id_of"]

_PATTERN = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
SAMPLED = 0x01


@dataclass(frozen=True)
class TraceParent:
    """The ids of a remote span: ``trace_id`` (128 bit), ``span_id`` (64 bit), flags."""

    trace_id: int
    span_id: int
    flags: int = SAMPLED

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def header(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.flags)


def format_traceparent(trace_id: int, span_id: int, flags: int = SAMPLED) -> str:
    """The version-00 header value; raises ``ValueError`` for zero or oversized ids."""
    if not 0 < trace_id < 2**128 or not 0 < span_id < 2**64 or not 0 <= flags < 256:
        raise ValueError("trace_id and span_id must be non-zero 128/64-bit ids, flags one byte")
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The ids in ``value``, or ``None`` when it is absent, malformed, or invalid per spec
    (version ``ff``, all-zero trace or span id)."""
    if not value:
        return None
    match = _PATTERN.match(value.strip().lower())
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex = match.groups()
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if version == "ff" or trace_id == 0 or span_id == 0:
        return None
    return TraceParent(trace_id, span_id, int(flags_hex, 16))


def trace_id_of(value: str | None) -> str | None:
    """The 32-hex trace id of a ``traceparent`` (what the command status API reports)."""
    parsed = parse_traceparent(value)
    return None if parsed is None else parsed.trace_id_hex
