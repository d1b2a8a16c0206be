"""Secret redaction and JSON rendering for log records (pure: records in, text out).

Both deployables install :class:`RedactionFilter` on their log handlers, so a password, token,
API key, ``Authorization`` header, private key (PEM block) or URL credential never reaches a
log line, whether it is in the message, its ``%`` arguments, an exception's text, or a
structured ``extra=`` value. Rules (each masks with ``***``):

- a mapping key (at any depth of an extra) containing password, passwd, secret, token,
  api_key/apikey, authorization or private_key: the whole value;
- in text, ``key=value``, ``key: value`` and ``"key": "value"`` for those keys;
- ``Bearer <credential>`` / ``Basic <credential>``;
- ``scheme://user:password@host`` -> ``scheme://user:***@host``;
- ``-----BEGIN ... PRIVATE KEY----- ... -----END ... PRIVATE KEY-----`` (the whole block).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "MASK", "JsonFormatter", "RedactionFilter", "install_log_handler",
           "is_sensitive_key", "redact_text", "redact_value"]

MASK = "***"
_KEYS = r"password|passwd|secret|token|api[_-]?key|apikey|authorization|private[_-]?key"
_SENSITIVE_KEY = re.compile(_KEYS, re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE "
                  r"KEY-----|\Z)", re.DOTALL)
_KEY_VALUE = re.compile(
    r"(?i)(\b[\w-]*(?:" + _KEYS + r")[\w-]*[\"']?\s*[:=]\s*[\"']?)"
    r"((?:bearer|basic)\s+[^\s\"',;&}]+|[^\s\"',;&}]+)")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+):[^\s@/]+@")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def is_sensitive_key(key: str) -> bool:
    return _SENSITIVE_KEY.search(key) is not None


def redact_text(text: str) -> str:
    """``text`` with every secret the module docstring lists replaced by ``***``."""
    if not text:
        return text
    text = _PEM.sub(lambda m: f"-----BEGIN {m.group(1)}PRIVATE KEY-----{MASK}", text)
    text = _KEY_VALUE.sub(lambda m: m.group(1) + MASK, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def redact_value(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` (an extra's value) with secrets masked, recursing into containers.

    A value under a sensitive ``key`` is masked whole; strings are scrubbed by
    :func:`redact_text`; other scalars pass through unchanged.
    """
    if key is not None and is_sensitive_key(key) and value is not None:
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    return value


def extras_of(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of ``record`` (everything a plain LogRecord lacks)."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


class RedactionFilter(logging.Filter):
    """Masks secrets in a record in place; never drops a record.

    Install it on handlers (a logger's own filters do not see records propagated from child
    loggers). The message is rendered (``msg % args``) and redacted once, so ``args`` is
    cleared; an exception's traceback text is rendered and redacted too.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in extras_of(record).items():
            setattr(record, key, redact_value(value, key))
        return True


SpanIds = Callable[[], tuple[str, str] | None]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC ISO 8601, ms), ``level``, ``logger``,
    ``message``, ``trace_id``/``span_id`` when ``span_ids()`` returns the active span's ids,
    ``exc`` when there is an exception, then the record's extras (non-JSON values as ``str``).
    """

    def __init__(self, span_ids: SpanIds | None = None) -> None:
        super().__init__()
        self._span_ids = span_ids

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        ids = self._span_ids() if self._span_ids is not None else None
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        for key, value in extras_of(record).items():
            line.setdefault(key, value)
        return json.dumps(line, default=str, ensure_ascii=False)


LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Handler(logging.StreamHandler[TextIO]):
    """Writes to ``stream``, or to whatever ``sys.stderr`` is at emit time (so a swapped
    stderr, e.g. under a test runner, is never written after it closed)."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        if self._fixed is None:
            self.stream = sys.stderr
        super().emit(record)


def install_log_handler(level: int | str, log_format: str, *, span_ids: SpanIds | None = None,
                        stream: TextIO | None = None) -> logging.Handler:
    """Give the root logger one redacting handler writing ``log_format`` lines (``json`` with
    ``span_ids()``'s trace ids, or ``text``) to ``stream`` (default: stderr) at ``level``.

    Calling it again replaces the handler it installed before; other handlers are left alone.
    Raises ``ValueError`` for an unknown format.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = _Handler(stream)
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter(span_ids) if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
