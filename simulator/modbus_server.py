"""pymodbus 3.16 server pieces the simulator needs: a request handler that answers late with
the right transaction id, and register blocks for one served register kind."""

from __future__ import annotations

import asyncio
import logging

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData

from protocols.modbus import RegisterKind

log = logging.getLogger(__name__)


class LateAnswerHandler(ServerRequestHandler):
    """pymodbus 3.16's handler, but each answer keeps the transaction id of *its* request.

    The stock handler reads ``self.last_pdu`` again after awaiting the datastore, so a slow
    answer that arrives after the client gave up goes out with the id of the client's *next*
    request, which the client then takes as the answer to that one (wrong unit, wrong values).
    A real slow device answers late with its own id, and the client drops it.
    """

    def handle_later(self) -> None:
        request, addr = self.last_pdu, self.last_addr
        if request is not None:
            asyncio.run_coroutine_threadsafe(self._answer(request, addr), self.loop)

    async def _answer(self, request: ModbusPDU, addr: tuple[str, int] | None) -> None:
        try:
            response = await request.datastore_update(self.server.context, request.dev_id)
        except NoSuchIdException:
            return  # no answer at all: the client times out
        except Exception:  # one bad request answers "device failure", the server keeps serving
            log.exception("unit %d: request failed", request.dev_id)
            response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
        if not self.transport:
            return  # the client hung up while the answer was being delayed
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        self.server_send(response, addr)  # type: ignore[no-untyped-call]


class SimulatorTcpServer(ModbusTcpServer):
    def callback_new_connection(self) -> LateAnswerHandler:
        return LateAnswerHandler(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect)


def register_blocks(kind: RegisterKind, first: int, size: int) -> tuple[
        list[SimData], list[SimData], list[SimData], list[SimData]]:
    """pymodbus blocks (coils, discrete inputs, holding, input): one readable register range
    of ``kind``, the other register kind invalid (reads answer "illegal address")."""
    served = [SimData(first, count=size, values=0, datatype=DataType.REGISTERS, readonly=True)]
    invalid = [SimData(0, datatype=DataType.INVALID)]
    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True)]
    holding, inputs = (served, invalid) if kind is RegisterKind.HOLDING else (invalid, served)
    return (bits, list(bits), holding, inputs)
