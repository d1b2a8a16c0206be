"""``MeterSimulator``: the simulated home served over Modbus TCP, with faults and ground truth.

One pymodbus 3.16 TCP server answers for five meters (see :class:`~simulator.meters.MeterBank`)
and two writable controllers, units 20 and 21 (see ``simulator.controllers``).
pymodbus keeps a register list per device; an ``action`` hook (pymodbus' documented per-access
callback) copies the bank's current image into it on every read, so a client always reads the
image the simulation clock last rendered; on the controllers it validates and applies writes
(FC6/FC16) before pymodbus stores them. Faults live in the same hooks, for every unit:

- ``silent``: no response at all (the client times out). Done on the outgoing packet
  (``trace_packet``), so *every* request to that unit goes unanswered, valid or not. Unit ids
  the simulator does not serve are silent too, as on an RS485 line.
- ``slow``: the answer is sent ``delay_s`` seconds late (other units keep answering).
- ``exception``: a Modbus exception response with ``code`` (default 4, device failure).
- ``counter_reset``: one-shot; the unit's energy counters drop to 0, or by ``step_back_wh``.

``pause()`` freezes the simulation clock (and so the registers) until ``resume()``; while
paused, :meth:`MeterSimulator.truth` is exactly what a read returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, TypeAlias

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.errors import ProtocolError
from protocols.modbus import RegisterKind
from simulator.controllers import IllegalAddress, IllegalValue, WriteLog
from simulator.meters import MeterBank, SimulatedMeter, Values
from simulator.modbus_server import SimulatorTcpServer, register_blocks
from simulator.profiles import HomeConfig
from simulator.unit_faults import (
    Fault,
    FaultKind,
    InvalidFault,
    SimulatorError,
    UnknownUnit,
    parse_fault,
)

if TYPE_CHECKING:
    from simulator.control import ControlServer

log = logging.getLogger(__name__)

_Action: TypeAlias = Callable[
    [int, int, int, int, list[int], list[int] | list[bool] | None],
    Coroutine[None, None, ExcCodes | None],
]

_MBAP_UNIT_BYTE = 6  # Modbus TCP header: tid(2) pid(2) len(2) unit(1)
_READ_HOLDING = 3


class MeterSimulator:
    """Simulated meters on Modbus TCP, run inside the caller's event loop.

    ``speed`` runs the simulation clock faster than real time (demo: a day in minutes).
    ``start_ts_ms`` is the simulated wall time at construction (default: now).
    """

    def __init__(self, seed: int = 1, tick_s: float = 0.2, start_ts_ms: int | None = None,
                 speed: float = 1.0, config: HomeConfig | None = None) -> None:
        if tick_s <= 0 or speed <= 0:
            raise ValueError("tick_s and speed must be > 0")
        self.seed = seed
        self.tick_s = tick_s
        self.speed = speed
        now_ms = time.time_ns() // 1_000_000
        self.bank = MeterBank(seed, now_ms if start_ts_ms is None else start_ts_ms, config)
        self._faults: dict[int, Fault] = {}
        self._running = asyncio.Event()
        self._running.set()
        self._stopping = asyncio.Event()
        self._server: SimulatorTcpServer | None = None
        self._clock: asyncio.Task[None] | None = None
        self._control: ControlServer | None = None
        self.port: int | None = None
        self.control_port: int | None = None

    # --- in-process control (the HTTP API calls the same methods) ---------------------

    @property
    def units(self) -> dict[int, str]:
        """Served unit ids and what each one measures (meters) or switches (controllers)."""
        meters = {unit: meter.name for unit, meter in self.bank.meters.items()}
        return meters | {unit: spec.name for unit, spec in self.bank.controllers.specs.items()}

    @property
    def ts_ms(self) -> int:
        """Simulated wall time of the current registers, ms since the epoch."""
        return self.bank.ts_ms

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def truth(self) -> dict[int, Values]:
        """unit -> channel -> canonical value the registers encode right now."""
        return self.bank.truth()

    def faults(self) -> dict[int, Fault]:
        return dict(self._faults)

    def writes(self) -> WriteLog:
        """Every accepted controller write: (unit, register) -> [(ts_ms, value), ...].

        ``ts_ms`` is simulated time (as :attr:`ts_ms`); rewriting the same value counts too.
        """
        return self.bank.controllers.writes()

    def holding(self, unit: int, register: int) -> int:
        """Raw holding register of a controller (unit 20 or 21). Raises :class:`UnknownUnit`
        for a unit without writable registers, :class:`SimulatorError` for a bad register."""
        if unit not in self.bank.controllers.specs:
            raise UnknownUnit(unit)
        try:
            return self.bank.controllers.read(unit, register)
        except IllegalAddress as exc:
            raise SimulatorError(str(exc)) from None

    def set_fault(self, unit: int, kind: str, **params: float) -> None:
        """Inject a fault (see module doc). Raises :class:`UnknownUnit`, :class:`InvalidFault`."""
        self._check_unit(unit)
        fault = parse_fault(kind, params)
        if fault.kind is FaultKind.COUNTER_RESET:
            if unit not in self.bank.meters:
                raise InvalidFault(f"kind: counter_reset needs a meter; unit {unit} has no "
                                   "energy counters")
            self.bank.step_back_counters(unit, params.get("step_back_wh"))
            log.info("unit %d: energy counters stepped back (%s)", unit, params or "to 0")
            return
        self._faults[unit] = fault
        log.info("unit %d: fault %s", unit, fault.describe())

    def clear_fault(self, unit: int) -> None:
        self._check_unit(unit)
        if self._faults.pop(unit, None):
            log.info("unit %d: fault cleared", unit)

    def pause(self) -> None:
        """Freeze the simulation clock: registers stay as they are until :meth:`resume`."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def _check_unit(self, unit: int) -> None:
        if unit not in self.bank.meters and unit not in self.bank.controllers.specs:
            raise UnknownUnit(unit)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    control_port: int | None = None) -> int:
        """Listen on ``host:port`` (0: any free port) and return the bound Modbus port.

        With ``control_port`` (0: any free port) the HTTP control API starts too; its port
        is then :attr:`control_port`. Raises :class:`SimulatorError` when a port is taken.
        """
        if self._server is not None:
            raise SimulatorError("already started")
        self._stopping.clear()
        server = SimulatorTcpServer(self._devices(), address=(host, port),
                                 trace_packet=self._drop_silent)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise SimulatorError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._server = server
        self.port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._clock = asyncio.create_task(self._run_clock(), name="meter-sim-clock")
        if control_port is not None:
            from simulator.control import ControlServer

            self._control = ControlServer(self)
            self.control_port = await self._control.start(host, control_port)
        log.info("meter simulator on %s:%d, units %s", host, self.port, sorted(self.units))
        return self.port

    async def stop(self) -> None:
        """Stop serving; pending slow answers are dropped. Safe to call twice."""
        self._stopping.set()
        if self._control is not None:
            await self._control.stop()
            self._control = None
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
            self._clock = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick_s)
            if not self._running.is_set():
                await self._running.wait()
                last = loop.time()  # paused time does not exist for the simulation
                continue
            now = loop.time()
            try:
                self.bank.advance((now - last) * self.speed)
            except ProtocolError:  # a value the registers cannot carry: keep serving the last
                log.exception("simulation step failed; registers keep their last values")
            last = now

    # --- pymodbus hooks -------------------------------------------------------------------

    def _devices(self) -> list[SimDevice]:
        devices = [SimDevice(0, simdata=register_blocks(RegisterKind.INPUT, 0, 1))]  # unknown ids
        for unit, meter in self.bank.meters.items():
            first = min(meter.image)
            size = max(meter.image) + 1 - first
            size += -size % 16  # a little slack past the last point, as real devices have
            blocks = register_blocks(meter.layout.register_kind, first, size)
            if meter.holding:  # configuration registers beside input registers (Eastron)
                holding = [SimData(a, count=2, values=0, datatype=DataType.REGISTERS,
                                   readonly=True) for a in sorted(meter.holding)[::2]]
                blocks = (blocks[0], blocks[1], holding, blocks[3])
            devices.append(SimDevice(unit, simdata=blocks, action=self._action(meter)))
        for unit, spec in self.bank.controllers.specs.items():
            holding = [SimData(0, count=len(spec.registers), values=0,
                               datatype=DataType.REGISTERS)]
            invalid = [SimData(0, datatype=DataType.INVALID)]
            bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True)]
            devices.append(SimDevice(unit, simdata=(bits, list(bits), holding, invalid),
                                     action=self._controller_action(unit)))
        return devices

    async def _fault_answer(self, unit: int) -> ExcCodes | None:
        """Apply a standing ``exception`` or ``slow`` fault of ``unit`` to one request."""
        fault = self._faults.get(unit)
        if fault is not None and fault.kind is FaultKind.EXCEPTION:
            return ExcCodes(fault.code)
        if fault is not None and fault.kind is FaultKind.SLOW:
            await self._sleep_unless_stopping(fault.delay_s)
            if self._stopping.is_set():
                raise NoSuchIdException("simulator stopping: no answer")
        return None

    def _controller_action(self, unit: int) -> _Action:
        async def on_access(  # noqa: PLR0917 - pymodbus' SimAction signature
                func_code: int, start: int, address: int, count: int,
                registers: list[int], values: list[int] | list[bool] | None,
                ) -> ExcCodes | None:
            if (failed := await self._fault_answer(unit)) is not None:
                return failed
            if values is not None:  # a slow device acts when it answers
                try:
                    self.bank.write(unit, address, [int(v) for v in values])
                except IllegalValue as exc:
                    log.info("rejected write: %s", exc)
                    return ExcCodes.ILLEGAL_VALUE
                except IllegalAddress:
                    return ExcCodes.ILLEGAL_ADDRESS
                log.info("unit %d: wrote %s at register %d", unit, list(values), address)
            for offset in range(count):
                registers[address - start + offset] = self.bank.controllers.read(
                    unit, address + offset)
            return None

        return on_access

    def _action(self, meter: SimulatedMeter) -> _Action:
        unit = meter.unit

        async def on_access(  # noqa: PLR0917 - pymodbus' SimAction signature
                func_code: int, start: int, address: int, count: int,
                            registers: list[int], values: list[int] | list[bool] | None,
                            ) -> ExcCodes | None:
            if (failed := await self._fault_answer(unit)) is not None:
                return failed
            if values is not None:
                return ExcCodes.ILLEGAL_ADDRESS  # meters are read-only here
            # Read after any delay: the answer is as of sending. FC3 on an input-register
            # meter reads its configuration registers.
            image = meter.holding if func_code == _READ_HOLDING and meter.holding else meter.image
            for offset in range(count):
                registers[address - start + offset] = image.get(address + offset, 0)
            return None

        return on_access

    async def _sleep_unless_stopping(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()

    def _drop_silent(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus ``trace_packet``: an empty answer is no answer (silent units, stopping)."""
        if not sending or len(packet) <= _MBAP_UNIT_BYTE:
            return packet
        unit = packet[_MBAP_UNIT_BYTE]
        fault = self._faults.get(unit)
        silent = fault is not None and fault.kind is FaultKind.SILENT
        served = unit in self.bank.meters or unit in self.bank.controllers.specs
        if silent or self._stopping.is_set() or not served:
            return b""
        return packet


