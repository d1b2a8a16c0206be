"""The Modbus TCP proxy's framing and forwarding rules on a fake bus: responses byte for byte,
exceptions passed through or mapped to gateway codes, writes refused unless allowed and never
to an actuator's register."""

from __future__ import annotations

import struct

import pytest

from edge_agent.errors import BusConnectError, BusError
from edge_agent.modbus_bus import FakeModbusBus, ModbusRequest, ModbusWrite
from edge_agent.modbus_proxy import ModbusTcpProxy
from protocols.modbus.mbap import parse_header
from protocols.modbus.registers import RegisterKind


def read_pdu(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def answering(request: ModbusRequest) -> list[int]:
    if request.unit == 9:
        raise BusError("unit 9: no answer")
    if request.unit == 8:
        raise BusConnectError("bus main: cannot connect to /dev/ttyUSB0")
    if request.address >= 1000:
        raise BusError("illegal address", exception_code=2)
    base = 100 if request.kind is RegisterKind.INPUT else 200
    return [base + request.address + i for i in range(request.count)]


def test_mbap_header_is_validated() -> None:
    assert parse_header(struct.pack(">HHHB", 7, 0, 6, 1)) == (7, 5, 1)
    with pytest.raises(ValueError, match="protocol id"):
        parse_header(struct.pack(">HHHB", 7, 1, 6, 1))
    with pytest.raises(ValueError, match="length"):
        parse_header(struct.pack(">HHHB", 7, 0, 1000, 1))


async def test_reads_are_forwarded_and_framed() -> None:
    bus = FakeModbusBus(answering)
    proxy = ModbusTcpProxy(bus)
    holding = await proxy.answer(0x1234, 1, read_pdu(3, 10, 2))
    inputs = await proxy.answer(0x1235, 1, read_pdu(4, 10, 1))
    assert holding == struct.pack(">HHHBBBHH", 0x1234, 0, 7, 1, 3, 4, 210, 211)
    assert inputs == struct.pack(">HHHBBBH", 0x1235, 0, 5, 1, 4, 2, 110)
    assert [(r.unit, r.kind, r.address, r.count) for r in bus.requests] == [
        (1, RegisterKind.HOLDING, 10, 2), (1, RegisterKind.INPUT, 10, 1)]


@pytest.mark.parametrize(("unit", "pdu", "code"), [
    (1, read_pdu(3, 1000, 1), 2),  # the device's own exception, passed on
    (9, read_pdu(3, 0, 1), 0x0B),  # no answer: gateway target failed to respond
    (8, read_pdu(3, 0, 1), 0x0A),  # bus down: gateway path unavailable
    (1, read_pdu(3, 0, 200), 3),  # too many registers
    (1, bytes([1, 0, 0, 0, 1]), 1),  # coils: not forwarded
])
async def test_failures_answer_modbus_exceptions(unit: int, pdu: bytes, code: int) -> None:
    frame = await ModbusTcpProxy(FakeModbusBus(answering)).answer(5, unit, pdu)
    assert frame == struct.pack(">HHHBBB", 5, 0, 3, unit, pdu[0] | 0x80, code)


async def test_writes_need_permission_and_never_touch_an_actuator_register() -> None:
    written: list[ModbusWrite] = []
    bus = FakeModbusBus(answering, on_write=written.append)
    fc6 = struct.pack(">BHH", 6, 0, 1)
    fc16 = struct.pack(">BHHBH", 16, 5, 1, 2, 450)
    closed = ModbusTcpProxy(bus)
    assert (await closed.answer(1, 20, fc6))[-2:] == bytes([0x86, 1])
    shared = ModbusTcpProxy(bus, allow_writes=True, protected={(20, 0)})
    assert (await shared.answer(2, 20, fc6))[-2:] == bytes([0x86, 2])
    assert await shared.answer(3, 21, fc6) == struct.pack(">HHHBBHH", 3, 0, 6, 21, 6, 0, 1)
    assert await shared.answer(4, 21, fc16) == struct.pack(">HHHBBHH", 4, 0, 6, 21, 16, 5, 1)
    assert [(w.unit, w.address, w.value) for w in written] == [(21, 0, 1), (21, 5, 450)]
    assert shared.refused == 1


async def test_unshared_units_are_not_forwarded() -> None:
    bus = FakeModbusBus(answering)
    proxy = ModbusTcpProxy(bus, units={1})
    frame = await proxy.answer(1, 2, read_pdu(3, 0, 1))
    assert frame[-2:] == bytes([0x83, 0x0B])
    assert bus.requests == []
