"""The simulator's control HTTP API: ground truth, faults, pause/resume. Loopback tool, stdlib.

A tiny HTTP/1.1 server on asyncio streams (one request per connection), so it runs in the same
event loop as the Modbus server and its answers are consistent with the registers. Routes:

- ``GET /truth`` -> ``{"ts_ms", "paused", "units": {"1": {"power": ..., ...}, ...}}``
- ``GET /units`` -> ``{"1": {"name": "grid", "fault": null}, ...}``
- ``POST /units/{unit}/fault`` with ``{"kind": "silent"|"slow"|"exception"|"counter_reset",
  "delay_s"?, "code"?, "step_back_wh"?}``; ``DELETE /units/{unit}/fault``
- ``POST /pause``, ``POST /resume``
- ``GET /writes`` -> ``{"writes": [{"unit": 20, "register": 0, "ts_ms": ..., "value": 1}, ...]}``:
  every accepted controller write, oldest first (simulated ``ts_ms``)

Errors answer ``{"error": "<field>: <what to fix>"}`` with 400 (bad body), 404 (unknown unit or
route) or 405. The routing (:func:`route`) is pure and unit-testable without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any, Protocol

from simulator.unit_faults import Fault, SimulatorError, UnknownUnit

log = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024
_READ_TIMEOUT_S = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large"}
_FAULT_PATH = re.compile(r"^/units/(\d{1,3})/fault$")

Response = tuple[int, dict[str, Any]]


class SimulatorControl(Protocol):
    """What the API drives (``MeterSimulator`` satisfies it)."""

    @property
    def ts_ms(self) -> int: ...

    @property
    def paused(self) -> bool: ...

    @property
    def units(self) -> dict[int, str]: ...

    def truth(self) -> dict[int, dict[str, float | None]]: ...

    def faults(self) -> dict[int, Fault]: ...

    def writes(self) -> dict[tuple[int, int], list[tuple[int, int]]]: ...

    def set_fault(self, unit: int, kind: str, **params: float) -> None: ...

    def clear_fault(self, unit: int) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


def _clock(sim: SimulatorControl) -> dict[str, Any]:
    return {"ts_ms": sim.ts_ms, "paused": sim.paused}


def _fault_params(body: bytes) -> tuple[str, dict[str, float]]:
    try:
        doc = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SimulatorError(f"body: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        raise SimulatorError('body: expected a JSON object like {"kind": "silent"}')
    params: dict[str, float] = {}
    for name, value in doc.items():
        if name == "kind":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SimulatorError(f"{name}: must be a number, got {value!r}")
        params[name] = float(value)
    return doc["kind"], params


def _fault_route(sim: SimulatorControl, method: str, unit: int, body: bytes) -> Response:
    if method == "POST":
        kind, params = _fault_params(body)
        sim.set_fault(unit, kind, **params)
    elif method == "DELETE":
        sim.clear_fault(unit)
    else:
        return 405, {"error": f"{method} not allowed here: use POST or DELETE"}
    fault = sim.faults().get(unit)
    return 200, {"unit": unit, "fault": fault.describe() if fault else None}


def _truth(sim: SimulatorControl) -> Response:
    units = {str(unit): values for unit, values in sim.truth().items()}
    return 200, {**_clock(sim), "units": units}


def _units(sim: SimulatorControl) -> Response:
    faults = sim.faults()
    return 200, {str(unit): {"name": name,
                             "fault": faults[unit].describe() if unit in faults else None}
                 for unit, name in sim.units.items()}


def _pause(sim: SimulatorControl) -> Response:
    sim.pause()
    return 200, _clock(sim)


def _resume(sim: SimulatorControl) -> Response:
    sim.resume()
    return 200, _clock(sim)


def _writes(sim: SimulatorControl) -> Response:
    rows = [{"unit": unit, "register": register, "ts_ms": ts_ms, "value": value}
            for (unit, register), history in sim.writes().items()
            for ts_ms, value in history]
    rows.sort(key=lambda row: row["ts_ms"])  # stable: same-time writes keep their order
    return 200, {"writes": rows}


_ROUTES = {
    "/truth": ("GET", _truth),
    "/units": ("GET", _units),
    "/writes": ("GET", _writes),
    "/pause": ("POST", _pause),
    "/resume": ("POST", _resume),
}


def route(sim: SimulatorControl, method: str, path: str, body: bytes = b"") -> Response:
    """Answer one request: ``(status, JSON document)``."""
    try:
        if match := _FAULT_PATH.match(path):
            return _fault_route(sim, method, int(match.group(1)), body)
        if path not in _ROUTES:
            return 404, {"error": f"no route {path}"}
        allowed, handler = _ROUTES[path]
        if method != allowed:
            return 405, {"error": f"{method} not allowed on {path}: use {allowed}"}
        return handler(sim)
    except UnknownUnit as exc:
        return 404, {"error": str(exc)}
    except SimulatorError as exc:
        return 400, {"error": str(exc)}


class ControlServer:
    """Serves :func:`route` over HTTP on asyncio streams in the running loop."""

    def __init__(self, sim: SimulatorControl) -> None:
        self._sim = sim
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen and return the bound port. ``OSError`` becomes :class:`SimulatorError`."""
        try:
            self._server = await asyncio.start_server(self._serve, host, port)
        except OSError as exc:
            raise SimulatorError(f"control API cannot listen on {host}:{port}: {exc}") from exc
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                status, doc = await self._answer(reader)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            status, doc = 400, {"error": "malformed or incomplete HTTP request"}
        payload = json.dumps(doc).encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + payload)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        method, target, _version = (await reader.readline()).decode("latin-1").split(" ", 2)
        length = 0
        while (line := (await reader.readline()).decode("latin-1").strip()):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length > _MAX_BODY:
            return 413, {"error": f"body: larger than {_MAX_BODY} bytes"}
        body = await reader.readexactly(length) if length else b""
        status, doc = route(self._sim, method.upper(), target.split("?", 1)[0], body)
        log.debug("control %s %s -> %d", method, target, status)
        return status, doc
