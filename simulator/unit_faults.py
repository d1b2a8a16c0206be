"""Per-unit faults the simulator can inject: what each kind means and how it is parsed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pymodbus.constants import ExcCodes


class SimulatorError(Exception):
    """Root of the simulator's errors."""


class UnknownUnit(SimulatorError):
    def __init__(self, unit: int) -> None:
        super().__init__(f"unit {unit} is not simulated")
        self.unit = unit


class InvalidFault(SimulatorError):
    """A fault request the simulator cannot honour; the message names the fix."""


class FaultKind(StrEnum):
    SILENT = "silent"
    SLOW = "slow"
    EXCEPTION = "exception"
    COUNTER_RESET = "counter_reset"


_PARAMS: dict[FaultKind, frozenset[str]] = {
    FaultKind.SILENT: frozenset(),
    FaultKind.SLOW: frozenset({"delay_s"}),
    FaultKind.EXCEPTION: frozenset({"code"}),
    FaultKind.COUNTER_RESET: frozenset({"step_back_wh"}),
}


@dataclass(frozen=True)
class Fault:
    """A standing fault of one unit (``counter_reset`` is applied at once, never stored)."""

    kind: FaultKind
    delay_s: float = 0.0
    code: int = ExcCodes.DEVICE_FAILURE

    def describe(self) -> dict[str, float | str]:
        if self.kind is FaultKind.SLOW:
            return {"kind": self.kind.value, "delay_s": self.delay_s}
        if self.kind is FaultKind.EXCEPTION:
            return {"kind": self.kind.value, "code": self.code}
        return {"kind": self.kind.value}


def parse_fault(kind: str, params: Mapping[str, float]) -> Fault:
    """Validate a fault request. Raises :class:`InvalidFault` naming the bad field."""
    try:
        fault_kind = FaultKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in FaultKind)
        raise InvalidFault(f"kind: {kind!r} is not one of {allowed}") from None
    unknown = set(params) - _PARAMS[fault_kind]
    if unknown:
        raise InvalidFault(f"{sorted(unknown)[0]}: not a parameter of fault {kind!r}")
    if fault_kind is FaultKind.SLOW:
        delay = params.get("delay_s")
        if delay is None or not 0.0 < delay <= 3600.0:
            raise InvalidFault("delay_s: a slow fault needs 0 < delay_s <= 3600 (seconds)")
        return Fault(fault_kind, delay_s=float(delay))
    if fault_kind is FaultKind.EXCEPTION:
        code = params.get("code", ExcCodes.DEVICE_FAILURE)
        if code != int(code) or int(code) not in set(ExcCodes):
            valid = ", ".join(str(int(c)) for c in ExcCodes)
            raise InvalidFault(f"code: {code!r} is not a Modbus exception code ({valid})")
        return Fault(fault_kind, code=int(code))
    if fault_kind is FaultKind.COUNTER_RESET and params.get("step_back_wh", 0.0) < 0:
        raise InvalidFault("step_back_wh: must be >= 0 (omit it to reset counters to 0)")
    return Fault(fault_kind)
