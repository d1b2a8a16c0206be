"""Modbus bus adapters: :class:`PymodbusBus` (TCP, RTU, RTU over TCP) and :class:`FakeModbusBus`.

Both implement :class:`edge_agent.ports.ModbusBus`. Every failure surfaces as
:class:`~edge_agent.errors.BusError` (``exception_code`` set for Modbus exception responses),
so readers handle one exception type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from edge_agent.config import BusSettings
from edge_agent.errors import BusError
from protocols.modbus.registers import RegisterKind

log = logging.getLogger(__name__)

# Modbus exception code 2: the device has no register at that address.
ILLEGAL_DATA_ADDRESS = 2
_Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class PymodbusBus:
    """One Modbus bus driven by a pymodbus 3.16 async client.

    - One request at a time (an ``asyncio.Lock``): RS485 has a single master, and a Modbus TCP
      gateway in front of RS485 serialises anyway.
    - ``frame_gap_ms`` of silence is kept between the end of one request and the next.
    - Each request gets one attempt of ``timeout_s``: retrying is the poller's job (with
      backoff), so a dead device does not hold the bus for ``retries x timeout``.
    - The link is (re)connected lazily before a request; pymodbus' own background reconnect
      is off so no task outlives :meth:`close`. pymodbus closes a TCP link after a few
      unanswered requests in a row; the next request reconnects.
    """

    def __init__(self, settings: BusSettings) -> None:
        self.name = settings.name
        self.settings = settings
        self._lock = asyncio.Lock()
        self._client: _Client | None = None
        self._last_frame_end = 0.0
        self._connect_failures = 0

    def _make_client(self) -> _Client:
        s = self.settings
        if s.kind == "rtu":
            assert s.serial_port is not None  # BusSettings validates this
            return AsyncModbusSerialClient(
                s.serial_port, framer=FramerType.RTU, baudrate=s.baudrate, bytesize=s.bytesize,
                parity=s.parity, stopbits=s.stopbits, name=s.name, timeout=s.timeout_s,
                retries=0, reconnect_delay=0,
            )
        assert s.host is not None
        framer = FramerType.RTU if s.kind == "rtu_over_tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(s.host, port=s.port, framer=framer, name=s.name,
                                    timeout=s.timeout_s, retries=0, reconnect_delay=0)

    async def _connected_client(self) -> _Client:
        if self._client is None:
            self._client = self._make_client()
        if not self._client.connected:
            if not await self._client.connect():
                self._connect_failures += 1
                raise BusError(f"bus {self.name}: cannot connect to {self._endpoint()}")
            if self._connect_failures:
                log.info("bus %s: connected to %s again", self.name, self._endpoint())
            self._connect_failures = 0
        return self._client

    def _endpoint(self) -> str:
        s = self.settings
        if s.kind == "rtu":
            return s.serial_port or ""
        return f"{s.host}:{s.port}"

    async def _frame_gap(self) -> None:
        gap = self.settings.frame_gap_ms / 1000.0
        wait = self._last_frame_end + gap - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def read_registers(
        self, unit: int, kind: RegisterKind, address: int, count: int
    ) -> list[int]:
        """Read ``count`` words; :class:`BusError` on timeout, exception response or link loss."""
        where = f"bus {self.name} unit {unit} {kind.value} {address}+{count}"
        async with self._lock:
            client = await self._connected_client()
            await self._frame_gap()
            try:
                response = await self._request(client, unit, kind, address, count)
            except ConnectionException as exc:
                client.close()
                raise BusError(f"{where}: link lost ({exc})") from exc
            except (TimeoutError, ModbusIOException) as exc:
                # pymodbus reports "no response within timeout" as ModbusIOException.
                raise BusError(f"{where}: no answer within {self.settings.timeout_s}s") from exc
            except ModbusException as exc:
                raise BusError(f"{where}: no valid answer ({exc})") from exc
            finally:
                self._last_frame_end = time.monotonic()
        if response.isError():
            code = response.exception_code
            raise BusError(f"{where}: exception response {code}", exception_code=code)
        registers = list(response.registers)
        if len(registers) != count:
            raise BusError(f"{where}: answered {len(registers)} registers")
        return registers

    async def _request(
        self, client: _Client, unit: int, kind: RegisterKind, address: int, count: int
    ) -> ModbusPDU:
        call = (client.read_input_registers if kind is RegisterKind.INPUT
                else client.read_holding_registers)
        # pymodbus times out after timeout_s itself; the outer bound only guards against a hang.
        return await asyncio.wait_for(call(address, count=count, device_id=unit),
                                      timeout=self.settings.timeout_s * 2 + 1)

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def build_buses(settings: Iterable[BusSettings]) -> dict[str, PymodbusBus]:
    """One :class:`PymodbusBus` per configured bus, by name. Nothing connects until a read."""
    return {bus.name: PymodbusBus(bus) for bus in settings}


@dataclass(frozen=True)
class ModbusRequest:
    """What a :class:`FakeModbusBus` handler receives."""

    unit: int
    kind: RegisterKind
    address: int
    count: int


Handler = Callable[[ModbusRequest], list[int] | Awaitable[list[int]]]


class FakeModbusBus:
    """A bus whose answers come from ``handler`` (sync or async); it may raise ``BusError``.

    Requests are serialised with a lock like the real bus and recorded in ``requests``.
    """

    def __init__(self, handler: Handler, name: str = "fake") -> None:
        self.name = name
        self.handler = handler
        self.requests: list[ModbusRequest] = []
        self.closed = False
        self._lock = asyncio.Lock()

    async def read_registers(
        self, unit: int, kind: RegisterKind, address: int, count: int
    ) -> list[int]:
        request = ModbusRequest(unit, kind, address, count)
        async with self._lock:
            self.requests.append(request)
            result = self.handler(request)
            if not isinstance(result, list):
                result = await result
        return result

    async def close(self) -> None:
        self.closed = True


def image_handler(images: Mapping[int, Mapping[int, int]]) -> Handler:
    """A handler serving register images by unit (both register kinds read the same image).

    An unknown unit times out (``BusError`` without code), a missing register answers
    exception 2 (illegal data address), as a real device does.
    """

    def handle(request: ModbusRequest) -> list[int]:
        image = images.get(request.unit)
        if image is None:
            raise BusError(f"unit {request.unit}: no answer")
        try:
            return [image[request.address + i] for i in range(request.count)]
        except KeyError:
            raise BusError(f"unit {request.unit}: illegal address",
                           exception_code=ILLEGAL_DATA_ADDRESS) from None

    return handle
