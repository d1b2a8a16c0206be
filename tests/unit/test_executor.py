"""The command executor over fake actuators (and a fake Modbus bus, and gpiozero's mock pins):
every outcome, at-most-once execution, crash resolution, interlock state across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge_agent.actuators import FakeActuator, GpiozeroRelay, ModbusRegisterActuator
from edge_agent.clock import FakeClock
from edge_agent.commands import CommandService
from edge_agent.config import ActuatorSettings, InterlockSettings, MqttSettings
from edge_agent.dedup import CommandDedupWindow
from edge_agent.errors import BusError, EdgeAgentError
from edge_agent.executor import CommandExecutor
from edge_agent.modbus_bus import FakeModbusBus, ModbusRequest, ModbusWrite
from edge_agent.ports import Actuator, Message
from edge_agent.telemetry_drain import LimitedPublisher
from edge_agent.uplink import FakeUplink
from protocols.commands import Action, Command, CommandAck, Outcome, ParamValue, Priority
from protocols.models import decode, encode

GW = "gw-1"
NOW = 1_764_000_000_000
_ids = iter(range(1, 1_000_000))


def command(action: Action = Action.SWITCH_ON, device: str = "boiler", *,
            params: dict[str, ParamValue] | None = None, gateway: str = GW,
            priority: Priority = Priority.NORMAL, expires_at: int = NOW + 60_000) -> Command:
    return Command(command_id=f"cmd-{next(_ids):08d}", gateway_id=gateway, device_id=device,
                   action=action, params=params or {}, priority=priority,
                   issued_at=NOW - 1000, expires_at=expires_at)


class Executors:
    """Builds executors on one dedup file (a second build is the agent after a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[CommandExecutor] = []
        self.startup_acks: list[CommandAck] = []

    async def __call__(self, actuators: dict[str, Actuator],
                       rules: dict[str, InterlockSettings] | None = None, *,
                       unavailable: dict[str, str] | None = None) -> CommandExecutor:
        window = CommandDedupWindow(self.path)
        executor = CommandExecutor(GW, window, actuators, rules, unavailable=unavailable)
        self.opened.append(executor)
        self.startup_acks = await executor.open(NOW)
        return executor


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Executors]:
    executors = Executors(tmp_path / "commands.sqlite")
    yield executors
    for executor in executors.opened:
        executor.window.close()


async def test_a_command_delivered_three_times_is_executed_once(
        make: Executors) -> None:
    boiler = FakeActuator("boiler")
    executor = await make({"boiler": boiler})
    cmd = command()
    acks = [await executor.handle(cmd, NOW + i) for i in range(3)]
    assert [(a.outcome, a.duplicate) for a in acks] == [
        (Outcome.EXECUTED, False), (Outcome.EXECUTED, True), (Outcome.EXECUTED, True)]
    assert acks[2].result == {"state": "on"} and acks[2].ts == NOW
    assert len(boiler.applied) == 1
    assert executor.counters.executed == 1 and executor.counters.deduplicated == 2


async def test_an_expired_command_is_never_executed_and_a_repeat_says_so_again(
        make: Executors) -> None:
    boiler = FakeActuator("boiler")
    executor = await make({"boiler": boiler})
    cmd = command(expires_at=NOW + 10)
    first = await executor.handle(cmd, NOW + 10)
    again = await executor.handle(cmd, NOW + 20)
    assert first.outcome is Outcome.EXPIRED and first.reason and "expired" in first.reason
    assert (again.outcome, again.duplicate) == (Outcome.EXPIRED, True)
    assert boiler.applied == []


async def test_a_command_for_another_gateway_is_rejected_and_not_remembered(
        make: Executors) -> None:
    boiler = FakeActuator("boiler")
    executor = await make({"boiler": boiler})
    ack = await executor.handle(command(gateway="gw-other"), NOW)
    assert ack.outcome is Outcome.REJECTED and "gw-other" in (ack.reason or "")
    assert executor.window.size() == 0 and boiler.applied == []


async def test_unknown_device_and_unsupported_action_are_rejected_with_reasons(
        make: Executors) -> None:
    executor = await make({"boiler": FakeActuator("boiler")})
    unknown = await executor.handle(command(device="garage"), NOW)
    assert unknown.outcome is Outcome.REJECTED
    assert unknown.reason == "unknown device garage (known: boiler)"
    unsupported = await executor.handle(
        command(Action.SET_SETPOINT, params={"value": 50.0}), NOW)
    assert unsupported.outcome is Outcome.REJECTED
    assert unsupported.reason == "device boiler does not support action set_setpoint"
    assert executor.counters.rejected == 2


async def test_an_actuator_left_out_at_start_fails_commands_with_why(
        make: Executors) -> None:
    executor = await make({}, unavailable={"boiler": "GPIO is unavailable"})
    ack = await executor.handle(command(), NOW)
    assert ack.outcome is Outcome.FAILED and "GPIO is unavailable" in (ack.reason or "")


async def test_an_actuator_error_is_failed_and_not_retried(
        make: Executors) -> None:
    def broken(action: Action, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
        raise EdgeAgentError("relay coil open")

    executor = await make({"boiler": FakeActuator("boiler", handler=broken)})
    cmd = command()
    ack = await executor.handle(cmd, NOW)
    assert ack.outcome is Outcome.FAILED and ack.reason == "relay coil open"
    assert (await executor.handle(cmd, NOW + 1)).duplicate


async def test_an_interlock_violation_is_rejected_and_safety_off_bypasses_min_on(
        make: Executors) -> None:
    boiler = FakeActuator("boiler")
    executor = await make({"boiler": boiler}, {"boiler": InterlockSettings(min_on_s=600)})
    assert (await executor.handle(command(Action.SWITCH_ON), NOW)).outcome is Outcome.EXECUTED
    refused = await executor.handle(command(Action.SWITCH_OFF), NOW + 1000)
    assert refused.outcome is Outcome.REJECTED and "min_on_s" in (refused.reason or "")
    safety = await executor.handle(command(Action.SWITCH_OFF, priority=Priority.SAFETY),
                                   NOW + 2000)
    assert safety.outcome is Outcome.EXECUTED
    assert [a for a, _ in boiler.applied] == [Action.SWITCH_ON, Action.SWITCH_OFF]


async def test_interlock_history_survives_a_restart(
        make: Executors) -> None:
    rules = {"boiler": InterlockSettings(min_off_s=300)}
    first = await make({"boiler": FakeActuator("boiler")}, rules)
    assert (await first.handle(command(Action.SWITCH_OFF), NOW)).outcome is Outcome.EXECUTED
    first.window.close()
    second = await make({"boiler": FakeActuator("boiler")}, rules)
    ack = await second.handle(command(Action.SWITCH_ON), NOW + 10_000)
    assert ack.outcome is Outcome.REJECTED and "min_off_s" in (ack.reason or "")


async def test_a_command_interrupted_by_a_crash_is_reported_unknown_not_rerun(
        make: Executors, tmp_path: Path) -> None:
    crashed = CommandDedupWindow(tmp_path / "commands.sqlite")
    crashed.open()
    cmd = command()
    crashed.begin(cmd, NOW)  # started, actuated, then SIGKILL before finish
    crashed.close()
    boiler = FakeActuator("boiler")
    boiler.state = {"state": "on"}
    executor = await make({"boiler": boiler})
    [startup] = make.startup_acks
    assert (startup.command_id, startup.outcome) == (cmd.command_id, Outcome.UNKNOWN)
    assert startup.result == {"state": "on"} and "interrupted" in (startup.reason or "")
    again = await executor.handle(cmd, NOW + 5)
    assert (again.outcome, again.duplicate) == (Outcome.UNKNOWN, True)
    assert boiler.applied == []
    # The read-back told the interlocks the device is on.
    assert executor.interlocks["boiler"].is_on is True


def register_bus(registers: dict[tuple[int, int], int]) -> FakeModbusBus:
    def read(request: ModbusRequest) -> list[int]:
        return [registers[(request.unit, request.address)]]

    def write(w: ModbusWrite) -> None:
        if w.unit == 21 and w.address == 0 and not 250 <= w.value <= 600:
            raise BusError("exception response 3", exception_code=3)
        if w.unit == 99:
            raise BusError("no answer within 0.5s")
        registers[(w.unit, w.address)] = w.value

    return FakeModbusBus(read, on_write=write)


def modbus(kind: str, unit: int, address: int, scale: float = 1.0) -> ActuatorSettings:
    return ActuatorSettings(id=f"{kind}-{unit}", kind=kind, bus="main", unit=unit,
                            address=address, scale=scale)


async def test_a_setpoint_is_written_scaled_and_a_refused_value_fails(
        make: Executors) -> None:
    registers = {(21, 0): 450}
    bus = register_bus(registers)
    setpoint = ModbusRegisterActuator(modbus("modbus_setpoint", 21, 0, scale=10), bus)
    executor = await make({"hp": setpoint})
    ok = await executor.handle(command(Action.SET_SETPOINT, "hp", params={"value": 52.5}), NOW)
    assert (ok.outcome, ok.result) == (Outcome.EXECUTED, {"value": 52.5})
    assert registers[(21, 0)] == 525
    refused = await executor.handle(command(Action.SET_SETPOINT, "hp", params={"value": 70}),
                                    NOW)
    assert refused.outcome is Outcome.FAILED and "exception response 3" in (refused.reason or "")
    assert await setpoint.read_back() == {"value": 52.5}


async def test_a_write_without_answer_is_unknown_with_the_read_back(
        make: Executors) -> None:
    registers = {(99, 0): 1}
    switch = ModbusRegisterActuator(modbus("modbus_switch", 99, 0), register_bus(registers))
    executor = await make({"sw": switch})
    ack = await executor.handle(command(Action.SWITCH_OFF, "sw"), NOW)
    assert ack.outcome is Outcome.UNKNOWN and ack.result == {"state": "on"}
    assert "no answer" in (ack.reason or "")


async def test_a_relay_on_mock_pins_switches_once_per_command(
        make: Executors) -> None:
    factory = MockFactory()
    relay = GpiozeroRelay(ActuatorSettings(id="boiler", kind="relay", pin=17), factory)
    executor = await make({"boiler": relay})
    pin = factory.pin(17)
    on = command(Action.SWITCH_ON)
    for i in range(3):
        await executor.handle(on, NOW + i)
    assert len(pin.states) - 1 == 1  # one edge: low -> high
    assert (await executor.handle(command(Action.SWITCH_OFF), NOW + 10)).result == {
        "state": "off"}
    assert [s.state for s in pin.states] == [False, True, False]
    await relay.close()


async def test_the_command_loop_skips_invalid_payloads_and_acks_valid_commands(
        make: Executors) -> None:
    boiler = FakeActuator("boiler")
    executor = await make({"boiler": boiler})
    two_acks = asyncio.Event()
    uplink = FakeUplink(lambda _: two_acks.set() if len(uplink.published) == 2 else None)
    await uplink.start()
    clock = FakeClock(NOW)
    service = CommandService(GW, executor, LimitedPublisher(uplink, MqttSettings(), clock), clock)
    service.submit(Message(service.topic, b"{not json"))
    service.submit(Message(service.topic, b'{"command_id": "short"}'))
    safety_off = command(Action.SWITCH_OFF, priority=Priority.SAFETY)
    service.submit(Message(service.topic, encode(command(Action.SWITCH_ON))))
    service.submit(Message(service.topic, encode(safety_off)))
    worker = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(two_acks.wait(), 5)
    finally:
        worker.cancel()
    acks = [decode(CommandAck, m.payload) for m in uplink.published]
    assert {m.topic for m in uplink.published} == {service.ack_topic}
    assert acks[0].command_id == safety_off.command_id  # safety jumps the queue
    assert [a.outcome for a in acks] == [Outcome.EXECUTED, Outcome.EXECUTED]
    stats = service.stats()
    assert (stats.invalid, stats.executed, stats.dropped) == (2, 2, 0)
