"""The narrow interfaces between the agent's logic and its I/O.

Each port has a real adapter named after its technology (``PymodbusBus``, ``SqliteBuffer``,
``PahoUplink``) and a ``Fake<Port>`` beside it for unit tests.
"""

from __future__ import annotations

from typing import Protocol

from protocols.modbus.registers import RegisterKind


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for intervals (the Pi has no RTC)."""

    def now_ms(self) -> int:
        """UTC epoch milliseconds."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never jumps."""
        ...


class ModbusBus(Protocol):
    """One physical or logical Modbus bus; requests on it are serialised by the adapter."""

    name: str

    async def read_registers(
        self, unit: int, kind: RegisterKind, address: int, count: int
    ) -> list[int]:
        """Read ``count`` 16-bit words; raise ``BusError`` on timeout or exception response."""
        ...

    async def close(self) -> None: ...
