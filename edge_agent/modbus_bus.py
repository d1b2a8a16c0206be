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
from edge_agent.errors import BusConnectError, BusError
from protocols.modbus.registers import RegisterKind

log = logging.getLogger(__name__)

# Modbus exception code 2: the device has no register at that address.
ILLEGAL_DATA_ADDRESS = 2
# Modbus exception code 3: the device refuses the value (e.g. a setpoint out of its range).
ILLEGAL_DATA_VALUE = 3
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
                raise BusConnectError(f"bus {self.name}: cannot connect to {self._endpoint()}")
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
        response = await self._exchange(where, self._request(unit, kind, address, count))
        registers = list(response.registers)
        if len(registers) != count:
            raise BusError(f"{where}: answered {len(registers)} registers")
        return registers

    async def write_register(self, unit: int, address: int, value: int) -> None:
        """Write one holding register (FC6). :class:`BusError` with ``exception_code`` when the
        device refused it (e.g. 3, illegal value: it did not take effect); without a code when
        there was no answer (the write may or may not have taken effect)."""
        where = f"bus {self.name} unit {unit} write holding {address}={value}"
        if not 0 <= value <= 0xFFFF:
            # Refused before sending, as the device would refuse it: it did not take effect.
            raise BusError(f"{where}: value outside 0..65535", exception_code=ILLEGAL_DATA_VALUE)
        await self._exchange(where, self._write(unit, address, value))

    async def _exchange(self, where: str,
                        request: Callable[[_Client], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """One request under the bus lock, with every failure translated to ``BusError``."""
        async with self._lock:
            client = await self._connected_client()
            await self._frame_gap()
            try:
                response = await request(client)
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
        return response

    def _request(self, unit: int, kind: RegisterKind, address: int,
                 count: int) -> Callable[[_Client], Awaitable[ModbusPDU]]:
        async def send(client: _Client) -> ModbusPDU:
            call = (client.read_input_registers if kind is RegisterKind.INPUT
                    else client.read_holding_registers)
            return await self._bounded(call(address, count=count, device_id=unit))

        return send

    def _write(self, unit: int, address: int,
               value: int) -> Callable[[_Client], Awaitable[ModbusPDU]]:
        async def send(client: _Client) -> ModbusPDU:
            return await self._bounded(client.write_register(address, value, device_id=unit))

        return send

    async def _bounded(self, call: Awaitable[ModbusPDU]) -> ModbusPDU:
        # pymodbus times out after timeout_s itself; the outer bound only guards against a hang.
        async with asyncio.timeout(self.settings.timeout_s * 2 + 1):
            return await call

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def build_buses(settings: Iterable[BusSettings]) -> dict[str, PymodbusBus]:
    """One :class:`PymodbusBus` per configured bus, by name. Nothing connects until a read."""
    return {bus.name: PymodbusBus(bus) for bus in settings}


@dataclass(frozen=True)
class ModbusWrite:
    """One register write a :class:`FakeModbusBus` received."""

    unit: int
    address: int
    value: int


@dataclass(frozen=True)
class ModbusRequest:
    """What a :class:`FakeModbusBus` handler receives."""

    unit: int
    kind: RegisterKind
    address: int
    count: int


Handler = Callable[[ModbusRequest], list[int] | Awaitable[list[int]]]
WriteHandler = Callable[[ModbusWrite], None]


class FakeModbusBus:
    """A bus whose answers come from ``handler`` (sync or async); it may raise ``BusError``.

    Requests are serialised with a lock like the real bus and recorded in ``requests``.
    Writes are passed to ``on_write`` (which may raise ``BusError``) and, when it does not
    raise, recorded in ``writes``.
    """

    def __init__(self, handler: Handler, name: str = "fake", *,
                 on_write: WriteHandler | None = None) -> None:
        self.name = name
        self.handler = handler
        self.on_write = on_write
        self.requests: list[ModbusRequest] = []
        self.writes: list[ModbusWrite] = []
        self.closed = False
        self._lock = asyncio.Lock()

    async def write_register(self, unit: int, address: int, value: int) -> None:
        write = ModbusWrite(unit, address, value)
        async with self._lock:
            if self.on_write is not None:
                self.on_write(write)
            self.writes.append(write)

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
