"""Fault injection and chaos scenarios for a local homewatt fleet.

:class:`TcpProxy` puts latency, dropped connections and outages between two loopback peers;
:mod:`.injectors` kill and restart processes and publish garbage; :mod:`.scenarios` are the
scenarios as code, each ending with a :class:`Ledger` (``homewatt-sim chaos SCENARIO``).
"""

from simulator.faults.harness import ScenarioParams, ScenarioResult, ScenarioSkipped
from simulator.faults.ledger import (
    Actuation,
    GatewayReadings,
    IssuedCommand,
    Ledger,
    StoredReading,
    build_ledger,
    format_ledger,
)
from simulator.faults.proxy import ProxyError, ProxyStats, ScheduleStep, TcpProxy
from simulator.faults.scenarios import SCENARIOS, run_scenario

__all__ = [
    "SCENARIOS",
    "Actuation",
    "GatewayReadings",
    "IssuedCommand",
    "Ledger",
    "ProxyError",
    "ProxyStats",
    "ScenarioParams",
    "ScenarioResult",
    "ScenarioSkipped",
    "ScheduleStep",
    "StoredReading",
    "TcpProxy",
    "build_ledger",
    "format_ledger",
    "run_scenario",
]
