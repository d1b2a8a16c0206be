"""Logging set-up for ``homewatt-cloud``: JSON lines (default) or text, secrets redacted.

Levels follow the reliability review: INFO for business events (a command created, a message
dead-lettered), WARNING for a failure that was recovered or will be retried, ERROR for one
that was not. :func:`configure_logging` is called once by the CLI; nothing is set at import.
"""

from __future__ import annotations

import logging
from typing import TextIO

from observability.tracing import current_span_ids
from protocols.redact import LOG_FORMATS, install_log_handler

__all__ = ["LOG_FORMATS", "configure_logging"]


def configure_logging(level: int | str = logging.INFO, log_format: str = "json", *,
                      stream: TextIO | None = None) -> logging.Handler:
    """Log to stderr (or ``stream``) in ``log_format`` (``json``: one object per line with
    ``trace_id``/``span_id`` of the active span; ``text``), secrets redacted. Calling it again
    replaces the handler. Raises ``ValueError`` for an unknown format."""
    return install_log_handler(level, log_format, span_ids=current_span_ids, stream=stream)
