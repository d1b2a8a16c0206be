"""Home Assistant integration through a real Mosquitto: the running agent (simulator meters,
a Modbus switch) publishes discovery configs valid under Home Assistant's schema, meter states
in the announced units, and switches go through the command executor with its interlocks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig
from edge_agent.runtime import Agent
from edge_agent.uplink import FakeUplink
from simulator import MeterSimulator
from tests.ha_schema import check_discovery, template_key
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GW = "gw-ha"
SWITCH_UNIT, SWITCH = 20, "waterheater-switch"


class HomeAssistantStub:
    """Subscribes like Home Assistant: discovery configs and every homewatt topic."""

    def __init__(self, port: int) -> None:
        self.messages: dict[str, bytes] = {}
        self.counts: dict[str, int] = {}
        self._changed = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="home-assistant")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("homeassistant/#", 1), ("homewatt/#", 1)])
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages[msg.topic] = msg.payload
            self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
            self._changed.notify_all()

    def wait_for(self, done: Callable[[dict[str, bytes]], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.messages):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; have {sorted(self.messages)}"
                self._changed.wait(left)

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
async def sim() -> AsyncIterator[MeterSimulator]:
    simulator = MeterSimulator(seed=11, tick_s=0.1)
    await simulator.start("127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
def home_assistant(mosquitto: Mosquitto) -> Iterator[HomeAssistantStub]:
    stub = HomeAssistantStub(mosquitto.port)
    yield stub
    stub.close()


def config(sim_port: int, broker: Mosquitto, tmp_path: object) -> AgentConfig:
    return AgentConfig(
        gateway_id=GW, data_dir=tmp_path,
        buses=[{"name": "main", "kind": "tcp", "host": "127.0.0.1", "port": sim_port,
                "timeout_s": 0.5}],
        meters=[{"id": "grid", "model": "sdm630", "role": "grid", "bus": "main", "unit": 1,
                 "interval_s": 0.3},
                {"id": "pv", "model": "sunspec", "role": "pv", "bus": "main", "unit": 126,
                 "interval_s": 0.3}],
        actuators=[{"id": SWITCH, "kind": "modbus_switch", "bus": "main", "unit": SWITCH_UNIT,
                    "address": 0, "interlocks": {"min_on_s": 600}}],
        home_assistant={"enabled": True, "url": broker.url, "publish_interval_s": 0.2})


def configs(messages: dict[str, bytes], component: str) -> dict[str, dict[str, object]]:
    return {t: json.loads(p) for t, p in messages.items()
            if t.startswith(f"homeassistant/{component}/") and t.endswith("/config")}


async def test_meters_and_switches_appear_in_home_assistant(
        sim: MeterSimulator, mosquitto: Mosquitto, home_assistant: HomeAssistantStub,
        tmp_path: object) -> None:
    assert sim.port is not None
    agent = Agent(config(sim.port, mosquitto, tmp_path), uplink=FakeUplink())
    await agent.start()
    try:
        grid_state = f"homewatt/{GW}/grid/state"
        await asyncio.to_thread(home_assistant.wait_for, lambda m: (
            grid_state in m and f"homewatt/{GW}/pv/state" in m
            and f"homewatt/{GW}/{SWITCH}/state" in m
            and len(configs(m, "sensor")) >= 40))
        messages = dict(home_assistant.messages)
        sim.pause()
        truth = sim.truth()[1]
        await asyncio.to_thread(home_assistant.wait_for, lambda m: json.loads(
            m[grid_state]).get("energy_import") == pytest.approx(
                truth["energy_import"] / 1000, rel=1e-6))  # Wh on our wire, kWh in HA
        sim.resume()
    finally:
        await agent.stop()

    problems = [p for topic, payload in messages.items() if topic.endswith("/config")
                for p in check_discovery(topic, payload)]
    assert problems == []
    sensors = configs(messages, "sensor")
    states = {t: json.loads(p) for t, p in messages.items() if t.endswith("/state")
              and not t.endswith(f"{SWITCH}/state")}
    for sensor in sensors.values():  # every sensor's template finds its value in the state
        key = template_key(sensor)
        assert key is not None and key in states[str(sensor["state_topic"])], sensor
    energy = {s["unique_id"]: s for s in sensors.values() if s.get("device_class") == "energy"}
    assert f"homewatt_{GW}_grid_energy_import" in energy
    assert f"homewatt_{GW}_pv_energy_production" in energy
    assert {(s["state_class"], s["unit_of_measurement"]) for s in energy.values()} == {
        ("total_increasing", "kWh")}
    assert not any("reactive_energy" in str(s["unique_id"]) for s in sensors.values())
    assert messages[f"homewatt/{GW}/availability"] == b"online"
    # The switch shows what the device's register holds (the simulator's heater starts on).
    on = sim.holding(SWITCH_UNIT, 0) == 1
    assert messages[f"homewatt/{GW}/{SWITCH}/state"] == (b"ON" if on else b"OFF")
    assert len(configs(messages, "switch")) == 1
    # A clean stop leaves 'offline' retained, as the last will would.
    await asyncio.to_thread(home_assistant.wait_for,
                            lambda m: m[f"homewatt/{GW}/availability"] == b"offline")


async def test_home_assistant_switch_goes_through_the_executor_and_its_interlocks(
        sim: MeterSimulator, mosquitto: Mosquitto, home_assistant: HomeAssistantStub,
        tmp_path: object) -> None:
    assert sim.port is not None
    agent = Agent(config(sim.port, mosquitto, tmp_path), uplink=FakeUplink())
    await agent.start()
    state_topic = f"homewatt/{GW}/{SWITCH}/state"
    try:
        await asyncio.to_thread(home_assistant.wait_for, lambda m: state_topic in m)
        home_assistant.publish(f"homewatt/{GW}/{SWITCH}/set", "OFF")
        await asyncio.to_thread(home_assistant.wait_for, lambda m: m.get(state_topic) == b"OFF")
        home_assistant.publish(f"homewatt/{GW}/{SWITCH}/set", "ON")
        await asyncio.to_thread(home_assistant.wait_for, lambda m: m.get(state_topic) == b"ON")
        before = home_assistant.counts[state_topic]
        # Switching off at once breaks min_on_s = 600: refused, and the real state comes back.
        home_assistant.publish(f"homewatt/{GW}/{SWITCH}/set", "OFF")
        await asyncio.to_thread(home_assistant.wait_for,
                                lambda m: home_assistant.counts[state_topic] > before)
        after_refusal = home_assistant.messages[state_topic]
        home_assistant.publish(f"homewatt/{GW}/{SWITCH}/set", "BLINK")  # not ON/OFF
        home_assistant.publish("homeassistant/status", "online")  # Home Assistant restarted
        switch_config = next(t for t in home_assistant.messages
                             if t.startswith("homeassistant/switch/"))
        announced = home_assistant.counts[switch_config]
        await asyncio.to_thread(home_assistant.wait_for,
                                lambda m: home_assistant.counts[switch_config] > announced)
        assert agent.commands is not None
        stats = agent.commands.stats()
        bridge = agent.home_assistant
        assert bridge is not None
        invalid = bridge.invalid_commands
    finally:
        await agent.stop()
    writes = [value for _ts, value in sim.writes()[(SWITCH_UNIT, 0)]]
    assert writes == [0, 1]  # off, on; the refused second off never reached the device
    assert after_refusal == b"ON"
    assert (stats.executed, stats.rejected) == (2, 1)
    assert invalid == 1
