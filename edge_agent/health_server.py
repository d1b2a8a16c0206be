"""The agent's local health and metrics port: ``/livez``, ``/readyz``, ``/metrics``.

A tiny HTTP/1.0 server on the agent's event loop (``asyncio.start_server``; one request per
connection, GET only), started by the runtime when ``health_port`` is not 0.

- ``/readyz``: 200 ``{"status": "ready"}`` when the critical checks pass (the buffer can be
  read, every supervised task is running); 503 naming the failed ones otherwise. Non-critical
  checks (uplink connected, every meter answering) never fail it: an agent offline from the
  cloud still buffers, so it answers 200 ``{"status": "degraded", "degraded": [...]}``.
- ``/livez``: 503 once the critical checks have failed continuously for longer than
  ``liveness_window_s`` (the watchdog/systemd should restart the agent). A loop too wedged to
  answer at all fails it by timing out.
- ``/metrics``: :class:`~edge_agent.metrics.AgentMetrics` in Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from edge_agent.errors import EdgeAgentError
from edge_agent.status import BufferStatsView
from observability.health import LivenessWindow
from protocols.models import MeterHealth

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable",
            400: "Bad Request"}
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Probe:
    """One evaluation: check name -> ``"ok"`` or what is wrong."""

    critical: Mapping[str, str]
    optional: Mapping[str, str]

    @property
    def ready(self) -> bool:
        return all(result == "ok" for result in self.critical.values())


async def agent_probe(buffer_stats: Callable[[], BufferStatsView],
                      tasks: Iterable[asyncio.Task[None]], uplink_connected: bool,
                      meters: Mapping[str, MeterHealth]) -> Probe:
    """The agent's checks. ``buffer_stats`` is blocking (run in a thread)."""
    try:
        await asyncio.to_thread(buffer_stats)
        buffer = "ok"
    except EdgeAgentError as exc:
        buffer = str(exc)
    stopped = sorted(task.get_name() for task in tasks if task.done())
    optional = {"uplink": "ok" if uplink_connected else "not connected (buffering)"}
    bad_meters = sorted(m for m, h in meters.items() if h.state != "ok")
    optional["meters"] = "ok" if not bad_meters else f"not answering: {', '.join(bad_meters)}"
    return Probe({"buffer": buffer,
                  "tasks": "ok" if not stopped else f"stopped: {', '.join(stopped)}"},
                 optional)


class AgentHealthServer:
    """``start``/``stop`` on the running loop; ``port`` is the bound port (0 asks the OS)."""

    def __init__(self, probe: Callable[[], Awaitable[Probe]], render_metrics: Callable[[], bytes],
                 *, host: str = "127.0.0.1", port: int = 0,
                 liveness: LivenessWindow | None = None) -> None:
        self._probe = probe
        self._render = render_metrics
        self._host = host
        self._port = port
        self.liveness = liveness or LivenessWindow(120.0)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the port is taken."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("health and metrics on http://%s:%d/", self._host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    method, path = await _read_request(reader)
            except (TimeoutError, ValueError, asyncio.IncompleteReadError):
                await _respond(writer, 400, b'{"detail": "bad request"}')
                return
            status, body, content_type = await self.answer(method, path)
            await _respond(writer, status, body, content_type)
        except ConnectionError as exc:
            log.debug("health client went away: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def answer(self, method: str, path: str) -> tuple[int, bytes, str]:
        """The response for one request: ``(status, body, content type)``."""
        path = path.split("?", 1)[0]
        if method != "GET":
            return 405, b'{"detail": "GET only"}', "application/json"
        if path == "/metrics":
            return 200, await asyncio.to_thread(self._render), METRICS_CONTENT_TYPE
        if path not in ("/readyz", "/livez"):
            return 404, b'{"detail": "try /livez, /readyz or /metrics"}', "application/json"
        probe = await self._probe()
        self.liveness.record(probe.ready)
        status, body = (_live if path == "/livez" else _ready)(probe, self.liveness)
        return status, json.dumps(body).encode(), "application/json"


def _ready(probe: Probe, _liveness: LivenessWindow) -> tuple[int, dict[str, object]]:
    body: dict[str, object] = {"checks": dict(probe.critical), "optional": dict(probe.optional)}
    if not probe.ready:
        failed = "; ".join(f"{k}: {v}" for k, v in probe.critical.items() if v != "ok")
        return 503, {"detail": failed, **body}
    degraded = sorted(k for k, v in probe.optional.items() if v != "ok")
    if degraded:
        return 200, {"status": "degraded", "degraded": degraded, **body}
    return 200, {"status": "ready", **body}


def _live(_probe: Probe, liveness: LivenessWindow) -> tuple[int, dict[str, object]]:
    failing = round(liveness.failing_for_s(), 1)
    if not liveness.alive():
        return 503, {"detail": f"not ready for {failing}s (more than {liveness.window_s}s)"}
    return 200, {"status": "ok", "not_ready_for_s": failing}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    line = (await reader.readline()).decode("latin-1").split()
    if len(line) < 2:
        raise ValueError("no request line")
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass  # headers are not needed
    return line[0], line[1]


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes,
                   content_type: str = "application/json") -> None:
    head = (f"HTTP/1.0 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    writer.write(head.encode("latin-1") + body)
    await writer.drain()


__all__ = ["AgentHealthServer", "LivenessWindow", "Probe", "agent_probe"]
