"""The homewatt edge agent: reads meters, buffers telemetry, talks to the cloud.

Public names are listed in ``__all__`` and imported lazily, so ``import edge_agent`` (or any
submodule) does not pull in pymodbus, APScheduler or paho until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "AgentConfig": "edge_agent.config",
    "load_config": "edge_agent.config",
    "EdgeAgentError": "edge_agent.errors",
    "ConfigError": "edge_agent.errors",
    "BusError": "edge_agent.errors",
    "PymodbusBus": "edge_agent.modbus_bus",
    "FakeModbusBus": "edge_agent.modbus_bus",
    "build_buses": "edge_agent.modbus_bus",
    "MeterReader": "edge_agent.meter_reader",
    "build_readers": "edge_agent.meter_reader",
    "Backoff": "edge_agent.backoff",
    "CounterGuard": "edge_agent.counter_guard",
    "MeterPoller": "edge_agent.scheduler",
    "MeterSource": "edge_agent.ports",
    "Agent": "edge_agent.runtime",
    "PahoUplink": "edge_agent.uplink",
    "FakeUplink": "edge_agent.uplink",
    "SqliteBuffer": "edge_agent.buffer",
    "GpiozeroPulseInput": "edge_agent.s0_input",
    "CommandDedupWindow": "edge_agent.dedup",
    "Interlock": "edge_agent.interlocks",
    "Actuator": "edge_agent.ports",
    "GpiozeroRelay": "edge_agent.actuators",
    "ModbusRegisterActuator": "edge_agent.actuators",
    "FakeActuator": "edge_agent.actuators",
    "CommandExecutor": "edge_agent.executor",
    "CommandService": "edge_agent.commands",
    "ClockWatch": "edge_agent.clock_watch",
    "LinuxClockSync": "edge_agent.clock_sync",
    "FakeClockSync": "edge_agent.clock_sync",
    "SocketNotifier": "edge_agent.sd_notify",
    "FakeNotifier": "edge_agent.sd_notify",
    "ServiceWatchdog": "edge_agent.service_watchdog",
    "HomeAssistantBridge": "edge_agent.ha_bridge",
    "ModbusTcpProxy": "edge_agent.modbus_proxy",
    "ShadowSync": "edge_agent.shadow_sync",
    "SqliteShadowStore": "edge_agent.shadow_store",
    "TopicShadowChannel": "edge_agent.shadow_channel",
    "FakeShadowChannel": "edge_agent.shadow_channel",
    "AwsIotShadowChannel": "edge_agent.awsiot_shadow",
}

__all__ = [
    "Actuator", "Agent", "AgentConfig", "AwsIotShadowChannel", "Backoff", "BusError",
    "ClockWatch", "CommandDedupWindow", "CommandExecutor", "CommandService", "ConfigError",
    "CounterGuard", "EdgeAgentError", "FakeActuator", "FakeClockSync", "FakeModbusBus",
    "FakeNotifier", "FakeShadowChannel", "FakeUplink", "GpiozeroPulseInput", "GpiozeroRelay",
    "HomeAssistantBridge", "Interlock", "LinuxClockSync", "MeterPoller", "MeterReader",
    "MeterSource", "ModbusRegisterActuator", "ModbusTcpProxy", "PahoUplink", "PymodbusBus",
    "ServiceWatchdog", "ShadowSync", "SocketNotifier", "SqliteBuffer", "SqliteShadowStore",
    "TopicShadowChannel", "build_buses", "build_readers", "load_config",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
