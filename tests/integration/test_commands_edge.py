"""Commands end to end on the edge side, over a real Mosquitto with a paho client as the cloud:
a command delivered three times actuates once; a SIGKILL right after actuation never leads to a
second actuation and ends in a definite outcome; expired commands and interlock violations are
refused with reasons."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from protocols import topics
from protocols.commands import Action, Command, CommandAck, Outcome
from protocols.models import GatewayStatus, decode, encode
from simulator import MeterSimulator
from tests.integration.conftest_uplink_cloud import Changes
from tests.integration.water_heater_agent import (
    AGENT_TOML,
    WATER_HEATER_UNIT,
    agent_process,
    simulator,  # noqa: F401 - a fixture, used as an argument
    switch_writes,
)
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

GW = "gw-commands"
RELAY_PIN = 17


class CommandCloud:
    """The cloud's side of the command topics: publishes commands, collects acks and statuses."""

    def __init__(self, port: int, changes: Changes) -> None:
        self.changes = changes
        self.acks: list[CommandAck] = []
        self.statuses: list[GatewayStatus] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"cloud-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)

    def __enter__(self) -> CommandCloud:
        self.client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe([(topics.commands_ack(GW), 1), (topics.status(GW), 1)])

    def _on_subscribe(self, *args: object) -> None:
        self._subscribed.set()
        self.changes.notify()

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        with self._lock:
            if message.topic == topics.status(GW):
                self.statuses.append(decode(GatewayStatus, bytes(message.payload)))
            else:
                self.acks.append(decode(CommandAck, bytes(message.payload)))
        self.changes.notify()

    def ready(self) -> bool:
        return self._subscribed.is_set()

    def online_since(self, ts_ms: int) -> bool:
        """The agent announced itself after ``ts_ms``: its command subscription is in place
        (it subscribes before it publishes its status, on the same connection)."""
        with self._lock:
            return any(s.state == "online" and s.ts >= ts_ms for s in self.statuses)

    def acks_for(self, command_id: str) -> list[CommandAck]:
        with self._lock:
            return [a for a in self.acks if a.command_id == command_id]

    def send(self, command: Command) -> None:
        self.client.publish(topics.commands(GW), encode(command), qos=1).wait_for_publish(5)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def command(action: Action = Action.SWITCH_ON, device: str = "boiler", *,
            ttl_ms: int = 300_000, issued_ms: int | None = None) -> Command:
    issued = now_ms() if issued_ms is None else issued_ms
    return Command(command_id=f"cmd-{uuid.uuid4().hex[:12]}", gateway_id=GW, device_id=device,
                   action=action, issued_at=issued, expires_at=issued + ttl_ms)


MQTT = {"keepalive_s": 5, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}


def relay_config(tmp_path: Path, url: str, **interlocks: float) -> AgentConfig:
    return AgentConfig(
        gateway_id=GW, data_dir=tmp_path / "data", mqtt={"url": url, **MQTT},
        actuators=[{"id": "boiler", "kind": "relay", "pin": RELAY_PIN,
                    "interlocks": interlocks}])


@contextlib.asynccontextmanager
async def cloud_and_agent(tmp_path: Path, broker: Mosquitto, **interlocks: float,
                          ) -> AsyncIterator[tuple[CommandCloud, Agent, MockFactory]]:
    changes = Changes()
    factory = MockFactory()
    with CommandCloud(broker.port, changes) as cloud:
        await changes.until(cloud.ready, 10)
        started = now_ms()
        agent = Agent(relay_config(tmp_path, broker.url, **interlocks), poller=FakePoller,
                      pin_factory=factory)
        await agent.start()
        try:
            await changes.until(lambda: cloud.online_since(started), 10)
            yield cloud, agent, factory
        finally:
            await agent.stop()


def relay_edges(factory: MockFactory) -> int:
    return len(factory.pin(RELAY_PIN).states) - 1


async def test_a_command_delivered_three_times_switches_the_relay_once(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with cloud_and_agent(tmp_path, mosquitto) as (cloud, agent, factory):
        on = command(Action.SWITCH_ON)
        for _ in range(3):
            cloud.send(on)
        await cloud.changes.until(lambda: len(cloud.acks_for(on.command_id)) == 3, 10)
        acks = cloud.acks_for(on.command_id)
        assert agent.commands is not None
        counters = agent.commands.counters
    assert relay_edges(factory) == 1
    assert [(a.outcome, a.duplicate) for a in acks] == [
        (Outcome.EXECUTED, False), (Outcome.EXECUTED, True), (Outcome.EXECUTED, True)]
    assert all(a.result == {"state": "on"} for a in acks)
    assert (counters.executed, counters.deduplicated) == (1, 2)


async def test_an_expired_command_is_acked_expired_and_never_actuates(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with cloud_and_agent(tmp_path, mosquitto) as (cloud, _, factory):
        late = command(Action.SWITCH_ON, issued_ms=now_ms() - 120_000, ttl_ms=60_000)
        cloud.send(late)
        await cloud.changes.until(lambda: bool(cloud.acks_for(late.command_id)), 10)
        [ack] = cloud.acks_for(late.command_id)
    assert ack.outcome is Outcome.EXPIRED and "expired" in (ack.reason or "")
    assert relay_edges(factory) == 0


async def test_an_interlock_violation_is_rejected_with_its_reason(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with cloud_and_agent(tmp_path, mosquitto, min_on_s=3600) as (cloud, _, factory):
        on, off = command(Action.SWITCH_ON), command(Action.SWITCH_OFF)
        cloud.send(on)
        cloud.send(off)
        await cloud.changes.until(lambda: bool(cloud.acks_for(off.command_id)), 10)
        [on_ack], [off_ack] = cloud.acks_for(on.command_id), cloud.acks_for(off.command_id)
    assert on_ack.outcome is Outcome.EXECUTED
    assert off_ack.outcome is Outcome.REJECTED
    assert off_ack.reason is not None and "min_on_s" in off_ack.reason
    assert relay_edges(factory) == 1  # on, and never off


# --- SIGKILL between actuation and ack: a real agent process against the Modbus simulator ---

async def until_written(sim: MeterSimulator, timeout: float) -> None:
    # The simulator runs in this event loop and offers no write event: poll it tightly so
    # the kill lands as close after the write as possible.
    async with asyncio.timeout(timeout):
        while not switch_writes(sim):
            await asyncio.sleep(0.0005)


@pytest.mark.parametrize("answer", ["dropped", "prompt"])
async def test_sigkill_right_after_actuation_never_actuates_twice(
        tmp_path: Path, mosquitto: Mosquitto, simulator: MeterSimulator,  # noqa: F811
        answer: str) -> None:
    """``dropped``: the device acts but its answer never arrives, so the kill surely lands
    between the ``started`` record and the outcome (-> ``unknown`` with the read-back).
    ``prompt``: a race with the ack; ``executed`` or ``unknown`` are both definite."""
    config = tmp_path / "agent.toml"
    config.write_text(AGENT_TOML.format(gw=GW, data=tmp_path / "data", url=mosquitto.url,
                                        port=simulator.port, unit=WATER_HEATER_UNIT))
    if answer == "dropped":
        simulator.set_fault(WATER_HEATER_UNIT, "silent")
    changes = Changes()
    off = command(Action.SWITCH_OFF, "waterheater")
    with CommandCloud(mosquitto.port, changes) as cloud:
        await changes.until(cloud.ready, 10)
        started = now_ms()
        with agent_process(config) as first:
            await changes.until(lambda: cloud.online_since(started), 20)
            cloud.send(off)
            await until_written(simulator, 20)
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
        simulator.clear_fault(WATER_HEATER_UNIT)
        before_restart = len(cloud.acks_for(off.command_id))
        with agent_process(config) as second:
            cloud.send(off)  # as the cloud does until it gets an ack
            await changes.until(
                lambda: any(a.duplicate for a in cloud.acks_for(off.command_id)[before_restart:]),
                20)
            second.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.wait, 20) == 0
    acks = cloud.acks_for(off.command_id)
    final = acks[-1]
    assert len(switch_writes(simulator)) == 1
    assert simulator.holding(WATER_HEATER_UNIT, 0) == 0
    assert final.outcome in (Outcome.EXECUTED, Outcome.UNKNOWN)
    assert final.result == {"state": "off"}
    assert {a.outcome for a in acks} == {final.outcome}  # the outcome never changes
    if answer == "dropped":
        assert final.outcome is Outcome.UNKNOWN
        assert "interrupted" in (final.reason or "")
