"""Actuator adapters behind :class:`edge_agent.ports.Actuator`: a GPIO relay (gpiozero), a
Modbus holding register (switch, setpoint, current limit) and :class:`FakeActuator`.

Each reports its state as a small dict: ``{"state": "on" | "off"}`` for switches,
``{"value": 45.0}`` for a setpoint, ``{"amps": 16.0}`` for a current limit (register / scale).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from gpiozero import OutputDevice
from gpiozero.exc import GPIOZeroError
from gpiozero.pins import Factory

from edge_agent.config import ActuatorSettings
from edge_agent.errors import EdgeAgentError
from edge_agent.ports import Actuator, ActuatorResult, ModbusRegisterBus
from protocols.commands import Action, ParamValue
from protocols.modbus.registers import RegisterKind

__all__ = ["ACTIONS", "ActuatorError", "FakeActuator", "GpiozeroRelay",
           "ModbusRegisterActuator", "build_actuators"]

log = logging.getLogger(__name__)

SWITCH = frozenset({Action.SWITCH_ON, Action.SWITCH_OFF})
# What each configured kind accepts; anything else is rejected before actuation.
ACTIONS: dict[str, frozenset[Action]] = {
    "relay": SWITCH,
    "modbus_switch": SWITCH,
    "modbus_setpoint": frozenset({Action.SET_SETPOINT}),
    "modbus_current_limit": frozenset({Action.SET_CURRENT_LIMIT}),
}
_VALUE_PARAM = {"modbus_setpoint": "value", "modbus_current_limit": "amps"}


class ActuatorError(EdgeAgentError):
    """The actuator could not do what it was told (it did not take effect)."""


def _state(on: bool) -> ActuatorResult:
    return {"state": "on" if on else "off"}


class GpiozeroRelay:
    """A relay on a GPIO pin (BCM numbering) through gpiozero's ``OutputDevice``.

    The pin is claimed without driving it (``initial_value=None``): an agent restart must not
    switch a load. ``pin_factory`` is gpiozero's (``MockFactory()`` in tests; ``None`` uses the
    default, which raises ``GpioUnavailableError`` off a Pi).
    """

    def __init__(self, settings: ActuatorSettings, pin_factory: Factory | None = None) -> None:
        from edge_agent.s0_input import default_pin_factory

        assert settings.pin is not None  # ActuatorSettings validates this
        self.device_id = settings.id
        self.actions = ACTIONS["relay"]
        factory = pin_factory or default_pin_factory()
        try:
            self._device = OutputDevice(settings.pin, active_high=settings.active_high,
                                        initial_value=None, pin_factory=factory)
        except GPIOZeroError as exc:
            raise ActuatorError(f"relay {settings.id}: cannot claim GPIO{settings.pin}: "
                                f"{exc}") from exc

    async def apply(self, action: Action, params: dict[str, ParamValue]) -> ActuatorResult:
        on = action is Action.SWITCH_ON
        return await asyncio.to_thread(self._switch, on)

    async def read_back(self) -> ActuatorResult:
        return await asyncio.to_thread(self._read)

    async def close(self) -> None:
        self._device.close()

    def _switch(self, on: bool) -> ActuatorResult:
        try:
            if on:
                self._device.on()
            else:
                self._device.off()
            return _state(bool(self._device.is_active))
        except GPIOZeroError as exc:
            raise ActuatorError(f"relay {self.device_id}: {exc}") from exc

    def _read(self) -> ActuatorResult:
        try:
            return _state(bool(self._device.is_active))
        except GPIOZeroError as exc:
            raise ActuatorError(f"relay {self.device_id}: {exc}") from exc


class ModbusRegisterActuator:
    """One holding register on a Modbus device: written with FC6, read back with FC3.

    ``modbus_switch`` writes 1 / 0; ``modbus_setpoint`` and ``modbus_current_limit`` write
    ``round(value * scale)`` (0..65535; a device refusing the value answers exception 3, which
    surfaces as ``BusError`` with ``exception_code=3``).
    """

    def __init__(self, settings: ActuatorSettings, bus: ModbusRegisterBus) -> None:
        assert settings.address is not None  # ActuatorSettings validates this
        self.device_id = settings.id
        self.kind = settings.kind
        self.actions = ACTIONS[settings.kind]
        self._bus = bus
        self._unit = settings.unit
        self._address = settings.address
        self._scale = settings.scale

    async def apply(self, action: Action, params: dict[str, ParamValue]) -> ActuatorResult:
        if action not in self.actions:
            raise ActuatorError(f"{self.device_id} does not support {action.value}")
        if self.kind == "modbus_switch":
            on = action is Action.SWITCH_ON
            await self._bus.write_register(self._unit, self._address, int(on))
            return _state(on)
        name = _VALUE_PARAM[self.kind]
        raw = round(float(params[name]) * self._scale)
        if not 0 <= raw <= 0xFFFF:
            raise ActuatorError(f"{self.device_id}: {name} {params[name]} does not fit the "
                                f"register (0..65535 after scale {self._scale:g})")
        await self._bus.write_register(self._unit, self._address, raw)
        return {name: raw / self._scale}

    async def read_back(self) -> ActuatorResult:
        [raw] = await self._bus.read_registers(self._unit, RegisterKind.HOLDING,
                                               self._address, 1)
        if self.kind == "modbus_switch":
            return _state(raw != 0)
        return {_VALUE_PARAM[self.kind]: raw / self._scale}

    async def close(self) -> None:
        """The bus is shared with the meters and closed by its owner."""


ApplyHandler = Callable[[Action, dict[str, ParamValue]], ActuatorResult]


class FakeActuator:
    """An in-memory actuator: ``handler`` (may raise ``EdgeAgentError``) decides each apply;
    by default switches and values are simply taken. Every successful apply is recorded."""

    def __init__(self, device_id: str, actions: frozenset[Action] = SWITCH,
                 handler: ApplyHandler | None = None) -> None:
        self.device_id = device_id
        self.actions = actions
        self.handler = handler
        self.applied: list[tuple[Action, dict[str, ParamValue]]] = []
        self.state: ActuatorResult = {}
        self.closed = False

    async def apply(self, action: Action, params: dict[str, ParamValue]) -> ActuatorResult:
        if self.handler is not None:
            result = self.handler(action, params)
        elif action in SWITCH:
            result = _state(action is Action.SWITCH_ON)
        else:
            result = dict(params)
        self.applied.append((action, dict(params)))
        self.state = dict(result)
        return result

    async def read_back(self) -> ActuatorResult:
        return dict(self.state)

    async def close(self) -> None:
        self.closed = True


def build_actuators(
    settings: list[ActuatorSettings], buses: Mapping[str, ModbusRegisterBus], *,
    pin_factory: Factory | None = None,
) -> tuple[dict[str, Actuator], dict[str, str]]:
    """Build every configured actuator: ``(actuators, unavailable)``.

    An actuator that cannot be built (no GPIO off a Pi, pin in use) is left out with a warning;
    ``unavailable`` maps its id to the reason, which commands to it are failed with.
    """
    actuators: dict[str, Actuator] = {}
    unavailable: dict[str, str] = {}
    for item in settings:
        try:
            if item.kind == "relay":
                actuators[item.id] = GpiozeroRelay(item, pin_factory)
            else:
                assert item.bus is not None  # validated
                actuators[item.id] = ModbusRegisterActuator(item, buses[item.bus])
        except EdgeAgentError as exc:
            log.warning("actuator %s left out: %s", item.id, exc)
            unavailable[item.id] = str(exc)
    return actuators, unavailable
