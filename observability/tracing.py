"""OpenTelemetry tracing shared by the cloud service and the edge agent: spans that continue a
W3C ``traceparent``.

Exporters are chosen once at start-up by :func:`configure_tracing` (``none`` by default,
``console`` or ``otlp``); nothing is configured at import. With ``none`` a span records
nothing and costs ~3 us (no API call); continuing an incoming trace goes through the
API's no-op tracer (~10 us, once per command) so the trace id still passes through, and
:func:`current_traceparent` returns ``None`` when there is no trace at all. Tests install an
SDK provider with an in-memory exporter via :func:`install_tracer_provider`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

from protocols.trace import format_traceparent, parse_traceparent

__all__ = ["EXPORTERS", "configure_tracing", "current_span_ids", "current_traceparent",
           "install_tracer_provider", "shutdown_tracing", "span", "tracing_enabled"]

EXPORTERS = ("none", "console", "otlp")
_SCOPE = "homewatt"
_state: dict[str, TracerProvider | None] = {"provider": None}

AttributeValue = str | int | float | bool


def configure_tracing(exporter: str, *, endpoint: str | None = None,
                      service_name: str = "homewatt") -> TracerProvider | None:
    """Install the exporter named by settings; returns the SDK provider (``None`` for none).

    ``otlp`` sends OTLP/HTTP protobuf to ``endpoint`` (e.g. ``http://127.0.0.1:4318/v1/traces``;
    unset: the SDK's ``OTEL_EXPORTER_OTLP_*`` defaults). Raises ``ValueError`` for another name.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"tracing exporter must be one of {', '.join(EXPORTERS)}")
    if exporter == "none":
        install_tracer_provider(None)
        return None
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter(out=sys.stderr)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    install_tracer_provider(provider)
    return provider


def install_tracer_provider(provider: TracerProvider | None) -> None:
    """Use ``provider`` for this package's spans (``None``: back to the no-op API tracer)."""
    _state["provider"] = provider


def shutdown_tracing() -> None:
    """Flush and stop the installed provider (call once at process exit)."""
    provider = _state["provider"]
    if provider is not None:
        provider.shutdown()
    _state["provider"] = None


def tracing_enabled() -> bool:
    """False with the ``none`` exporter: hot paths skip span work entirely."""
    return _state["provider"] is not None


def _tracer() -> trace.Tracer:
    provider = _state["provider"]
    return provider.get_tracer(_SCOPE) if provider is not None else trace.get_tracer(_SCOPE)


def _parent(traceparent: str | None) -> Context | None:
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None  # the current context: a child of the active span, or a new trace
    remote = SpanContext(parsed.trace_id, parsed.span_id, is_remote=True,
                         trace_flags=TraceFlags(parsed.flags))
    return trace.set_span_in_context(NonRecordingSpan(remote))


@contextmanager
def span(name: str, *, traceparent: str | None = None,
         attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Span]:
    """A current span named ``name``: a child of ``traceparent`` when it is a valid W3C value,
    else of the active span (or the root of a new trace). Exceptions are recorded and re-raised.
    """
    if _state["provider"] is None and traceparent is None and not _global_sdk():
        # Tracing off and nothing to continue: the no-op span would only repeat the active
        # context, so skip the API call (the hot-path cost is this check).
        yield trace.get_current_span()
        return
    with _tracer().start_as_current_span(name, context=_parent(traceparent),
                                         attributes=dict(attributes or {})) as current:
        yield current


def _global_sdk() -> bool:
    """True when the host installed a global SDK provider (then its spans are used)."""
    return not isinstance(trace.get_tracer_provider(),
                          trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the active span, for a payload; ``None`` when there is none."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format_traceparent(context.trace_id, context.span_id, int(context.trace_flags))


def current_span_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the active span, for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
