"""Which actuators get a shadow, and how the paho transport wires it (the awsiot one is proven
against a real TLS broker in tests/integration/test_awsiot_shadow.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent.agent_wiring import build_channels
from edge_agent.config import AgentConfig
from edge_agent.inbound import InboundRouter
from edge_agent.shadow_channel import TopicShadowChannel
from edge_agent.uplink import FakeUplink

RELAYS = [{"id": "boiler", "kind": "relay", "pin": 17},
          {"id": "pv.inverter", "kind": "relay", "pin": 18}]


def config(tmp_path: Path, **extra: object) -> AgentConfig:
    return AgentConfig(gateway_id="gw-1", data_dir=tmp_path, actuators=RELAYS, **extra)


def test_a_dotted_actuator_id_gets_no_shadow_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    router = InboundRouter()
    with caplog.at_level(logging.WARNING):
        channels = build_channels(config(tmp_path), FakeUplink(), router,
                                  ["boiler", "pv.inverter"])
    assert channels.shadow_names == ["boiler"]
    assert isinstance(channels.shadow, TopicShadowChannel)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pv.inverter" in warnings[0]
    assert "$aws/things/gw-1/shadow/name/+/update/delta" in router.filters
    assert channels.jobs is None  # firmware is off


def test_shadows_can_be_turned_off(tmp_path: Path) -> None:
    router = InboundRouter()
    channels = build_channels(config(tmp_path, shadow={"enabled": False}), FakeUplink(),
                              router, ["boiler"])
    assert channels.shadow is None and router.filters == []
