"""Modbus TCP framing (MBAP) for the agent's proxy: parse requests, build responses. Pure.

A Modbus TCP frame is the 7-byte MBAP header (transaction id, protocol id 0, length of what
follows, unit id) and a PDU (function code + data). The proxy serves the register functions a
meter integration needs: 3 (read holding), 4 (read input), 6 (write single register) and 16
(write multiple registers, one register: what many clients use for FC6); anything else gets
exception 1, as a device that lacks the function answers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocols.errors import ProtocolError

__all__ = ["HEADER_SIZE", "ModbusException", "ProxyRequest", "exception_frame",
           "parse_header", "parse_request", "read_response", "write_response"]

HEADER_SIZE = 7
MAX_PDU = 253
READ_HOLDING, READ_INPUT, WRITE_SINGLE, WRITE_MULTIPLE = 3, 4, 6, 16
MAX_READ = 125  # registers per read (spec limit)

ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B  # the device behind the gateway did not answer


class ModbusException(ProtocolError):
    """A request the proxy answers with exception ``code`` (its function code kept)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class ProxyRequest:
    transaction: int
    unit: int
    function: int
    address: int
    count: int = 0  # reads
    value: int | None = None  # writes


def parse_header(header: bytes) -> tuple[int, int, int]:
    """``(transaction id, PDU length, unit)``; ``ValueError`` for a frame to drop the
    connection over (not Modbus TCP, or a length out of range)."""
    if len(header) != HEADER_SIZE:
        raise ValueError("short MBAP header")
    transaction, protocol, length, unit = struct.unpack(">HHHB", header)
    if protocol != 0:
        raise ValueError(f"protocol id {protocol}, not Modbus (0)")
    if not 2 <= length <= MAX_PDU + 1:
        raise ValueError(f"MBAP length {length} out of range")
    return transaction, length - 1, unit


def parse_request(transaction: int, unit: int, pdu: bytes) -> ProxyRequest:
    """The request in ``pdu``; :class:`ModbusException` for one to answer with an error."""
    function = pdu[0]
    if function in (READ_HOLDING, READ_INPUT):
        if len(pdu) != 5:
            raise ModbusException(ILLEGAL_DATA_VALUE, "read request of the wrong length")
        address, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= MAX_READ:
            raise ModbusException(ILLEGAL_DATA_VALUE, f"read of {count} registers")
        return ProxyRequest(transaction, unit, function, address, count=count)
    if function == WRITE_SINGLE:
        if len(pdu) != 5:
            raise ModbusException(ILLEGAL_DATA_VALUE, "write request of the wrong length")
        address, value = struct.unpack(">HH", pdu[1:5])
        return ProxyRequest(transaction, unit, function, address, value=value)
    if function == WRITE_MULTIPLE:
        if len(pdu) < 6:
            raise ModbusException(ILLEGAL_DATA_VALUE, "write request of the wrong length")
        address, count, size = struct.unpack(">HHB", pdu[1:6])
        if count != 1:
            raise ModbusException(ILLEGAL_FUNCTION, f"write of {count} registers at once: "
                                  "only single-register writes are forwarded")
        if size != 2 or len(pdu) != 8:
            raise ModbusException(ILLEGAL_DATA_VALUE, "write request of the wrong length")
        return ProxyRequest(transaction, unit, function, address,
                            value=struct.unpack(">H", pdu[6:8])[0])
    raise ModbusException(ILLEGAL_FUNCTION, f"function {function} is not forwarded")


def _frame(transaction: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


def read_response(request: ProxyRequest, words: list[int]) -> bytes:
    body = struct.pack(f">{len(words)}H", *words)
    return _frame(request.transaction, request.unit,
                  bytes([request.function, len(body)]) + body)


def write_response(request: ProxyRequest) -> bytes:
    """FC6 echoes address and value; FC16 answers address and quantity (1)."""
    second = request.value if request.function == WRITE_SINGLE else 1
    return _frame(request.transaction, request.unit,
                  struct.pack(">BHH", request.function, request.address, second or 0))


def exception_frame(transaction: int, unit: int, function: int, code: int) -> bytes:
    return _frame(transaction, unit, bytes([function | 0x80, code]))
