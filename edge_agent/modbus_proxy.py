"""A Modbus TCP server that shares one of the agent's buses with other local systems.

RS485 allows one master, and the agent is it. Other systems (an EV charger controller, a
home-automation box) talk Modbus TCP to the proxy instead, and each request is forwarded
through the agent's own bus object and so through its lock and frame gap
(:mod:`edge_agent.modbus_bus`): requests from the agent's poller and from proxy clients take
turns, one at a time, in arrival order (``asyncio.Lock`` is fair). Each client connection has
one request in flight at most and at most ``max_clients`` connect at once, so a poll waits
for at most ``max_clients`` foreign requests: the agent's schedule holds however busy the
clients are.

Failures come back as a real gateway reports them: the device's own exception response is
passed on; no answer from the device is exception 0x0B (gateway target failed to respond),
a bus that cannot be opened 0x0A (gateway path unavailable). Writes are refused (exception 1)
unless ``allow_writes``; even then a register an actuator of the agent owns is refused
(exception 2) so nothing bypasses the command executor's interlocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping

from edge_agent.config import AgentConfig
from edge_agent.errors import BusConnectError, BusError
from edge_agent.ports import ModbusRegisterBus
from edge_agent.supervise import cancel_and_wait
from protocols.modbus.mbap import (
    GATEWAY_PATH_UNAVAILABLE,
    GATEWAY_TARGET_FAILED,
    HEADER_SIZE,
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_FUNCTION,
    READ_INPUT,
    ModbusException,
    ProxyRequest,
    exception_frame,
    parse_header,
    parse_request,
    read_response,
    write_response,
)
from protocols.modbus.registers import RegisterKind

__all__ = ["ModbusTcpProxy", "build_proxies"]

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 300.0  # a client silent this long is disconnected


class ModbusTcpProxy:
    """See the module docstring. ``protected`` holds the ``(unit, register)`` pairs that
    configured actuators write; ``units`` limits which unit ids are forwarded (None: all)."""

    def __init__(self, bus: ModbusRegisterBus, *, host: str = "127.0.0.1", port: int = 0,
                 max_clients: int = 4, allow_writes: bool = False,
                 protected: Collection[tuple[int, int]] = (),
                 units: Collection[int] | None = None) -> None:
        self._bus = bus
        self._host = host
        self._port = port
        self._max_clients = max_clients
        self._allow_writes = allow_writes
        self._protected = frozenset(protected)
        self._units = None if units is None else frozenset(units)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.refused = 0

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the port is taken."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("Modbus TCP proxy for bus %s on %s:%d", self._bus.name, self._host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await cancel_and_wait(list(self._clients))
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= self._max_clients:
            log.warning("Modbus proxy: %d clients already, refusing %s", self._max_clients,
                        writer.get_extra_info("peername"))
            writer.close()
            return
        self._clients.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            log.debug("Modbus proxy client gone: %s", exc)
        except asyncio.CancelledError:
            # stop() cancels sessions; ending normally keeps Python 3.11's stream callback
            # from logging the cancellation as an error.
            log.debug("Modbus proxy session closed by stop()")
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            async with asyncio.timeout(IDLE_TIMEOUT_S):
                header = await reader.readexactly(HEADER_SIZE)
            transaction, size, unit = parse_header(header)  # ValueError: not Modbus, hang up
            async with asyncio.timeout(IDLE_TIMEOUT_S):
                pdu = await reader.readexactly(size)
            writer.write(await self.answer(transaction, unit, pdu))
            await writer.drain()

    async def answer(self, transaction: int, unit: int, pdu: bytes) -> bytes:
        """The response frame for one request PDU (never raises for a bad request)."""
        self.requests += 1
        try:
            request = parse_request(transaction, unit, pdu)
            return await self._forward(request)
        except ModbusException as exc:
            self.refused += 1
            log.debug("Modbus proxy: unit %d function %d refused: %s", unit, pdu[0], exc)
            return exception_frame(transaction, unit, pdu[0], exc.code)

    async def _forward(self, request: ProxyRequest) -> bytes:
        if self._units is not None and request.unit not in self._units:
            raise ModbusException(GATEWAY_TARGET_FAILED, f"unit {request.unit} not shared")
        try:
            if request.value is None:
                kind = RegisterKind.INPUT if request.function == READ_INPUT \
                    else RegisterKind.HOLDING
                words = await self._bus.read_registers(request.unit, kind, request.address,
                                                       request.count)
                return read_response(request, words)
            self._check_write(request)
            await self._bus.write_register(request.unit, request.address, request.value)
            return write_response(request)
        except BusConnectError as exc:
            raise ModbusException(GATEWAY_PATH_UNAVAILABLE, str(exc)) from exc
        except BusError as exc:
            code = exc.exception_code
            raise ModbusException(GATEWAY_TARGET_FAILED if code is None else code,
                                  str(exc)) from exc

    def _check_write(self, request: ProxyRequest) -> None:
        if not self._allow_writes:
            raise ModbusException(ILLEGAL_FUNCTION, "writes are not enabled on this proxy")
        if (request.unit, request.address) in self._protected:
            log.warning("Modbus proxy: write to unit %d register %d refused: an actuator "
                        "owns it; command it through homewatt", request.unit, request.address)
            raise ModbusException(ILLEGAL_DATA_ADDRESS, "register owned by an actuator")


def build_proxies(config: AgentConfig,
                  buses: Mapping[str, ModbusRegisterBus]) -> list[ModbusTcpProxy]:
    """One proxy per ``[[modbus_proxy]]``, on the agent's own bus objects; the registers of
    configured Modbus actuators on that bus are protected."""
    proxies = []
    for settings in config.modbus_proxy:
        owned = {(a.unit, a.address) for a in config.actuators
                 if a.bus == settings.bus and a.address is not None}
        proxies.append(ModbusTcpProxy(buses[settings.bus], host=settings.host,
                                      port=settings.port, max_clients=settings.max_clients,
                                      allow_writes=settings.allow_writes, protected=owned,
                                      units=settings.units))
    return proxies
