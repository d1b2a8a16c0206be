"""Helpers for the cloud command tests: a device registry entry, a test gateway that collects
``hw/{gw}/commands`` and sends ``CommandAck``s, and a started service with fast redelivery."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sync.bootstrap import CloudService, build_service, build_store
from cloud_sync.db import migrate
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.settings import CloudSettings
from protocols import decode, encode, topics
from protocols.commands import Command, CommandAck, Outcome
from tests.integration.conftest_cloud import GW, api_client, cloud_settings, wait_until
from tests.services import Mosquitto

# The gateway's names for its devices (the command wire's device_id) and their registry ids
# (the API path): two homes may both have a "relay-1".
DEVICE = "relay-1"
EVSE = "evse-1"
DEVICE_ID = f"{GW}.{DEVICE}"
EVSE_ID = f"{GW}.{EVSE}"
ALL_CAPS = ["switch_on", "switch_off", "set_setpoint"]


def register_devices(settings: CloudSettings) -> None:
    """Register the gateway and its two actuators."""
    store = build_store(settings)
    try:
        migrate.upgrade(store.engine)
        registry = SqlRegistryStore(store.engine, store.breaker)
        registry.add_gateway(GW, 0)
        registry.add_device(GW, DEVICE, 0, kind="actuator", capabilities=ALL_CAPS,
                            model="relay")
        registry.add_device(GW, EVSE, 0, kind="actuator", capabilities=["set_current_limit"],
                            model="evse")
    finally:
        store.engine.dispose()


def start_service(settings: CloudSettings) -> CloudService:
    service = build_service(settings)
    service.start()
    assert service.wait_started(30), "cloud service did not start"
    assert service.bus.subscribed.wait(10), "cloud did not subscribe"
    return service


def command_settings(db_url: str, broker: Mosquitto, tmp_path: Path,
                     **extra: object) -> CloudSettings:
    options: dict[str, object] = {"command_redelivery_s": 0.5, "command_puback_timeout_s": 2.0}
    options.update(extra)
    return cloud_settings(db_url, broker, tmp_path, **options)


@pytest.fixture
def command_cloud(db_url: str, broker: Mosquitto, tmp_path: Path) -> Iterator[CloudService]:
    settings = command_settings(db_url, broker, tmp_path)
    register_devices(settings)
    service = start_service(settings)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
async def api(command_cloud: CloudService) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(command_cloud) as client:
        yield client


def body(action: str = "switch_on", **extra: Any) -> dict[str, Any]:
    return {"action": action, **extra}


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


class TestGateway:
    """Subscribes to ``hw/{gw}/commands``; records every Command in arrival order; can ack."""

    __test__ = False
    _ids = itertools.count()

    def __init__(self, broker: Mosquitto, gateway_id: str = GW) -> None:
        self.gateway_id = gateway_id
        self.received: list[Command] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"testgw-{next(self._ids)}-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(topics.commands(gateway_id), qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        command = decode(Command, bytes(msg.payload))
        with self._lock:
            self.received.append(command)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(c.command_id for c in self.received)

    def wait_for(self, command_id: str, times: int = 1, timeout: float = 20.0) -> Command:
        wait_until(lambda: self.counts()[command_id] >= times, timeout,
                   f"{times} deliveries of {command_id}")
        with self._lock:
            return next(c for c in self.received if c.command_id == command_id)

    def ack(self, command: Command, outcome: Outcome = Outcome.EXECUTED, *,
            duplicate: bool = False, **result: Any) -> None:
        message = CommandAck(command_id=command.command_id, gateway_id=command.gateway_id,
                             device_id=command.device_id, outcome=outcome, duplicate=duplicate,
                             result=result, ts=int(time.time() * 1000))
        self.publish(topics.commands_ack(command.gateway_id), encode(message))

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(broker: Mosquitto) -> Iterator[TestGateway]:
    gw = TestGateway(broker)
    try:
        yield gw
    finally:
        gw.close()
