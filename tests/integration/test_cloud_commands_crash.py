"""A command the API accepted is delivered after a SIGKILL before publishing; on PostgreSQL two
dispatchers at once publish each outbox row in one claim at a time."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest modules and used as arguments

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest

from cloud_sync.command_rules import CommandRequest
from cloud_sync.db.commands_store import CommandLimits, SqlCommandStore
from cloud_sync.db.engine import make_engine
from cloud_sync.db.outbox_store import SqlOutbox
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import make_db_breaker, now_ms
from cloud_sync.dispatcher import CommandDispatcher
from cloud_sync.mqtt import PahoIngestBus
from protocols.commands import Action, Priority
from tests.auth_helpers import headers, operator_key
from tests.integration.conftest_cloud import broker, db_url, wait_until  # noqa: F401 - fixtures
from tests.integration.conftest_cloud_commands import (  # noqa: F401 - fixtures
    DEVICE_ID,
    TestGateway,
    command_settings,
    gateway,
    register_devices,
)
from tests.services import Mosquitto, free_port, throwaway_postgres, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@contextmanager
def serve(db_url: str, broker: Mosquitto, data_dir: Path, *, dispatcher: bool,
          ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "HOMEWATT_DB_URL": db_url, "HOMEWATT_MQTT_URL": broker.url,
           "HOMEWATT_DATA_DIR": str(data_dir), "HOMEWATT_CLIENT_ID": "cloud-cmd-crash",
           "HOMEWATT_DISPATCHER_ENABLED": "true" if dispatcher else "false",
           "HOMEWATT_COMMAND_REDELIVERY_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cloud_sync.cli", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 30)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/startupz").status_code == 200, 30, "startup")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_sigkill_between_outbox_insert_and_publish_still_delivers_after_restart(
        db_url: str, broker: Mosquitto, tmp_path: Path, gateway: TestGateway) -> None:
    register_devices(command_settings(db_url, broker, tmp_path))
    engine = make_engine(db_url)
    auth = headers(operator_key(engine))
    engine.dispose()
    url = f"/api/v1/devices/{DEVICE_ID}/commands"
    with serve(db_url, broker, tmp_path, dispatcher=False) as (base, proc):
        response = httpx.post(base + url, json={"action": "switch_off"},
                              headers={"Idempotency-Key": "crash-1", **auth})
        assert response.status_code == 201
        command_id = response.json()["command_id"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert gateway.counts()[command_id] == 0
    with serve(db_url, broker, tmp_path, dispatcher=True) as (base, _proc):
        command = gateway.wait_for(command_id, timeout=20)
        gateway.ack(command)
        wait_until(lambda: httpx.get(f"{base}{url}/{command_id}", headers=auth)
                   .json()["status"] == "executed", 20, "executed")
        replay = httpx.post(base + url, json={"action": "switch_off"},
                            headers={"Idempotency-Key": "crash-1", **auth})
        assert (replay.status_code, replay.json()["command_id"]) == (200, command_id)


@pytest.mark.postgres
def test_two_dispatchers_on_postgres_publish_each_row_once_per_round(
        broker: Mosquitto, tmp_path: Path, gateway: TestGateway) -> None:
    with throwaway_postgres() as url:
        settings = command_settings(url, broker, tmp_path)
        register_devices(settings)
        engine = make_engine(url)
        store = SqlCommandStore(engine, make_db_breaker(3, 1))
        device = SqlRegistryStore(engine, make_db_breaker(3, 1)).device(DEVICE_ID)
        assert device is not None
        ids = [store.create_command(device, uuid.uuid4().hex,
                                    CommandRequest(Action.SWITCH_ON, {}, 60, Priority.NORMAL),
                                    now_ms(), CommandLimits(1000, 1000))[0].command_id
               for _ in range(60)]
        buses, dispatchers, engines = [], [], [engine, make_engine(url), make_engine(url)]
        for n in range(2):
            bus = PahoIngestBus("127.0.0.1", broker.port, client_id=f"disp-{n}",
                                sink=lambda _m: True, topic_filter="hw/unused/x")
            bus.start()
            assert bus.wait_connected(10)
            buses.append(bus)
            # redelivery far beyond the test: any second publish would be a double claim
            outbox = SqlOutbox(engines[n + 1], make_db_breaker(3, 1))
            dispatchers.append(CommandDispatcher(outbox, bus, redelivery_s=600, batch=4))
        try:
            start = threading.Barrier(2)
            threads = [threading.Thread(target=lambda d=d: (start.wait(), d.start()))
                       for d in dispatchers]
            for thread in threads:
                thread.start()
            wait_until(lambda: all(gateway.counts()[i] >= 1 for i in ids), 20, "all published")
            wait_until(lambda: sum(d.stats.published for d in dispatchers) >= len(ids), 10,
                       "confirmations")
            for d in dispatchers:
                rounds = d.stats.rounds
                wait_until(partial(lambda d, r: d.stats.rounds > r, d, rounds), 5,
                           "another round")
            assert sum(d.stats.published for d in dispatchers) == len(ids)
            assert set(gateway.counts().values()) == {1}
        finally:
            for d in dispatchers:
                d.stop()
            for bus in buses:
                bus.stop()
            for each in engines:
                each.dispose()
