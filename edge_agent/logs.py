"""Logging set-up for ``homewatt-agent``: JSON lines (default) or text, secrets redacted.

Levels follow the reliability review: INFO for business events (a command executed, a meter
found), WARNING for a failure that was recovered or will be retried, ERROR for one
that was not. :func:`configure_logging` is called once by the CLI; nothing is set at import.
"""

from __future__ import annotations

import logging
import zlib
from typing import TextIO

from observability.tracing import current_span_ids
from protocols.redact import LOG_FORMATS, install_log_handler

__all__ = ["LOG_FORMATS", "LogSampler", "configure_logging", "sampled_by_key"]


def configure_logging(level: int | str = logging.INFO, log_format: str = "json", *,
                      stream: TextIO | None = None) -> logging.Handler:
    """Log to stderr (or ``stream``) in ``log_format`` (``json``: one object per line with
    ``trace_id``/``span_id`` of the active span; ``text``), secrets redacted. Calling it again
    replaces the handler. Raises ``ValueError`` for an unknown format."""
    return install_log_handler(level, log_format, span_ids=current_span_ids, stream=stream)


def sampled_by_key(key: str, one_in: int) -> bool:
    """Deterministic 1-in-``one_in`` choice by ``key`` (e.g. a meter id): the same keys are
    always logged, so a sampled meter's story stays complete across restarts."""
    return one_in <= 1 or zlib.crc32(key.encode()) % one_in == 0


class LogSampler:
    """Logs a repeating per-reading event the first time per key, then 1 in ``one_in``.

    ``should_log(key)`` returns ``(log_it, suppressed)``: ``suppressed`` is how many were
    skipped for ``key`` since the last logged one, so the line can say so. Keys are bounded by
    the configured meters and channels; at ``max_keys`` the oldest key is forgotten.
    """

    def __init__(self, one_in: int = 100, *, max_keys: int = 4096) -> None:
        if one_in < 1:
            raise ValueError("one_in must be >= 1")
        self.one_in = one_in
        self._max_keys = max_keys
        self._seen: dict[str, int] = {}

    def should_log(self, key: str) -> tuple[bool, int]:
        count = self._seen.pop(key, 0)
        if len(self._seen) >= self._max_keys:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = count + 1
        if count % self.one_in == 0:
            return True, 0 if count == 0 else self.one_in - 1
        return False, 0
