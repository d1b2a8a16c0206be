"""The fleet's plan, as pure data: which homes exist, who runs them, and each agent's config.

Everything here is deterministic from ``(gateways, seed)``, so a fleet run is reproducible: home
``i`` is gateway ``home-{i:04d}`` with simulator seed ``seed * 100_003 + i`` (a different load
profile per home), and homes are dealt round-robin to the worker processes.
No I/O: :mod:`simulator.fleet` and :mod:`simulator.fleet_worker` do the starting.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig

# (meter id, model, role, unit) in the order a home's meters are taken: M meters per gateway
# cycle through the simulator's five meter units.
METER_UNITS: tuple[tuple[str, str, str, int], ...] = (
    ("grid", "sdm630", "grid", 1),
    ("heatpump", "sdm120", "load", 2),
    ("waterheater", "sdm120", "load", 3),
    ("pv", "sunspec", "pv", 126),
    ("grid-sunspec", "sunspec", "grid", 240),
)
WATER_HEATER_SWITCH_UNIT, HEAT_PUMP_SETPOINT_UNIT = 20, 21
# Device ids are global in the cloud's registry, so each carries its gateway id.
SWITCH_SUFFIX, SETPOINT_SUFFIX = "waterheater-switch", "heatpump-setpoint"
SWITCH_CAPABILITIES, SETPOINT_CAPABILITIES = "switch_on,switch_off", "set_setpoint"


def gateway_id(index: int) -> str:
    """``home-0001`` for index 1: sortable, and a valid AWS IoT thing name."""
    return f"home-{index:04d}"


def switch_device(gateway: str) -> str:
    return f"{gateway}-{SWITCH_SUFFIX}"


def setpoint_device(gateway: str) -> str:
    return f"{gateway}-{SETPOINT_SUFFIX}"


@dataclass(frozen=True)
class Home:
    gateway_id: str
    seed: int


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process runs; written as JSON for ``python -m simulator.fleet_worker``.

    ``ports_file`` is where the simulator worker publishes each home's Modbus and control
    ports (JSON ``{gateway: [modbus, control]}``) and where the agent worker reads them.
    """

    homes: list[Home]
    workdir: str
    ports_file: str
    broker_url: str
    interval_s: float
    meters_per_gateway: int
    actuators: bool
    ack_timeout_s: float
    status_interval_s: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        data: dict[str, Any] = json.loads(text)
        data["homes"] = [Home(**home) for home in data["homes"]]
        return cls(**data)


def plan_homes(gateways: int, seed: int) -> list[Home]:
    """``gateways`` homes, ids ``home-0001``.., each with its own reproducible seed."""
    if gateways < 1:
        raise ValueError("gateways must be >= 1")
    return [Home(gateway_id(i), seed * 100_003 + i) for i in range(1, gateways + 1)]


def partition(homes: list[Home], processes: int) -> list[list[Home]]:
    """Deal homes round-robin to at most ``processes`` non-empty groups."""
    count = max(1, min(processes, len(homes)))
    return [homes[i::count] for i in range(count)]


def agent_config(home: Home, spec: WorkerSpec, modbus_port: int) -> AgentConfig:
    """One home's agent: its own data dir, its home's simulator as bus ``sim``, M meters.

    Actuators (when ``spec.actuators``) are the water-heater switch on unit 20 and the
    heat-pump setpoint on unit 21, with the ids :func:`switch_device` / :func:`setpoint_device`.
    """
    meters = []
    for k in range(spec.meters_per_gateway):
        name, model, role, unit = METER_UNITS[k % len(METER_UNITS)]
        suffix = "" if k < len(METER_UNITS) else f"-{k // len(METER_UNITS)}"
        meters.append({"id": name + suffix, "model": model, "role": role, "bus": "sim",
                       "unit": unit, "interval_s": spec.interval_s})
    actuators: list[dict[str, Any]] = []
    if spec.actuators:
        actuators = [
            {"id": switch_device(home.gateway_id), "kind": "modbus_switch", "bus": "sim",
             "unit": WATER_HEATER_SWITCH_UNIT, "address": 0},
            {"id": setpoint_device(home.gateway_id), "kind": "modbus_setpoint", "bus": "sim",
             "unit": HEAT_PUMP_SETPOINT_UNIT, "address": 0, "scale": 10,
             "interlocks": {"setpoint_min": 25, "setpoint_max": 55}},
        ]
    # model_validate, not the constructor: no HOMEWATT_* environment variable can leak in.
    return AgentConfig.model_validate({
        "gateway_id": home.gateway_id,
        "data_dir": Path(spec.workdir) / "agents" / home.gateway_id,
        "status_interval_s": spec.status_interval_s,
        "mqtt": {"url": spec.broker_url, "ack_timeout_s": spec.ack_timeout_s,
                 "reconnect_min_s": 0.5, "reconnect_max_s": 5.0},
        "buses": [{"name": "sim", "kind": "tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout_s": 1.0}],
        "meters": meters,
        "actuators": actuators,
    })
