"""The shadow service through a real Mosquitto on SQLite and PostgreSQL: AWS's reply topics and
payloads, a redelivered request applied once, malformed and oversized requests rejected in AWS's
shape (the service goes on), a database outage that holds the PUBACK until the request is
answered, and the REST view (GET/PATCH with auth, 404 across homes, 422, 409)."""

# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments
from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sync.bootstrap import CloudService
from cloud_sync.db.registry_store import SqlRegistryStore
from cloud_sync.db.store import make_db_breaker
from tests.auth_helpers import headers, home_with_owner, operator_key
from tests.integration.conftest_cloud import (  # noqa: F401 - fixtures
    GW,
    DbOutage,
    api_client,
    broker,
    cloud,
    cloud_settings,
    db_url,
    outage,
    register,
    shadows_of,
    started,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration
BASE = f"$aws/things/{GW}/shadow/name/boiler"


class ShadowProbe:
    """A device-side paho client: publishes requests, collects every reply on the thing."""

    def __init__(self, broker: Mosquitto, thing: str = GW) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"probe-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(f"$aws/things/{thing}/shadow/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def send(self, topic: str, payload: bytes | dict[str, Any]) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, raw, qos=1).wait_for_publish(5)

    def reply(self, suffix: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next message on a topic ending in ``suffix`` (requests themselves skipped)."""
        while True:
            topic, body = self.messages.get(timeout=timeout)
            if topic.endswith(suffix):
                return dict(json.loads(body))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def probe(broker: Mosquitto) -> Iterator[ShadowProbe]:
    client = ShadowProbe(broker)
    yield client
    client.close()


def test_update_get_delta_documents_and_rejections_on_the_wire(
        cloud: CloudService, probe: ShadowProbe) -> None:
    probe.send(f"{BASE}/get", {"clientToken": "g0"})
    missing = probe.reply("/get/rejected")
    assert missing["code"] == 404 and missing["clientToken"] == "g0"

    probe.send(f"{BASE}/update", {"state": {"desired": {"state": "on"},
                                            "reported": {"state": "off"}},
                                  "clientToken": "u1"})
    accepted = probe.reply("/update/accepted")
    assert (accepted["version"], accepted["clientToken"]) == (1, "u1")
    delta = probe.reply("/update/delta")
    assert delta["state"] == {"state": "on"} and delta["version"] == 1
    documents = probe.reply("/update/documents")
    assert documents["previous"] is None
    assert documents["current"]["state"] == {"desired": {"state": "on"},
                                             "reported": {"state": "off"}}

    probe.send(f"{BASE}/update", {"state": {"reported": {"state": "on"}}, "version": 0,
                                  "clientToken": "u2"})
    conflict = probe.reply("/update/rejected")
    assert conflict == {"code": 409, "message": "Version conflict",
                        "timestamp": conflict["timestamp"], "clientToken": "u2"}

    probe.send(f"{BASE}/update", b"{definitely not json")
    assert probe.reply("/update/rejected")["code"] == 400
    probe.send(f"{BASE}/update", {"state": {"reported": {"blob": "x" * 9000}},
                                  "clientToken": "big"})
    too_big = probe.reply("/update/rejected")
    assert (too_big["code"], too_big["clientToken"]) == (413, "big")

    probe.send(f"{BASE}/get", {"clientToken": "g1"})
    got = probe.reply("/get/accepted")
    assert got["version"] == 1 and got["state"]["delta"] == {"state": "on"}
    stats = shadows_of(cloud).stats
    assert (stats.accepted, stats.rejected) == (2, 4)


def test_a_redelivered_update_is_answered_again_not_applied_twice(
        cloud: CloudService, probe: ShadowProbe) -> None:
    request = {"state": {"reported": {"state": "on"}}, "clientToken": "same-token"}
    for _ in range(3):  # what a broker redelivery looks like to the service
        probe.send(f"{BASE}/update", request)
    versions = [probe.reply("/update/accepted")["version"] for _ in range(3)]
    assert versions == [1, 1, 1]
    probe.send(f"{BASE}/update", {"state": {"reported": {"state": "off"}},
                                  "clientToken": "next"})
    assert probe.reply("/update/accepted")["version"] == 2


@pytest.fixture
def fragile_cloud(outage: DbOutage, broker: Mosquitto, tmp_path: Path,
                  ) -> Iterator[CloudService]:
    settings = cloud_settings(outage.url, broker, tmp_path, db_statement_timeout_s=0.5,
                              db_breaker_fail_max=2, db_breaker_reset_s=0.5)
    register(settings, GW)
    running = started(settings)
    yield running
    outage.end()
    running.stop()


@pytest.mark.chaos
def test_updates_during_a_db_outage_are_answered_once_it_is_back(
        fragile_cloud: CloudService, outage: DbOutage, probe: ShadowProbe) -> None:
    outage.begin()
    for n in range(5):
        probe.send(f"{BASE}/update", {"state": {"reported": {"n": n}}, "clientToken": f"t{n}"})
    with pytest.raises(queue.Empty):
        probe.reply("/update/accepted", timeout=2.0)  # nothing answered while it is down
    outage.end()
    replies = [probe.reply("/update/accepted", timeout=30) for _ in range(5)]
    assert [r["clientToken"] for r in replies] == [f"t{n}" for n in range(5)]
    assert [r["version"] for r in replies] == [1, 2, 3, 4, 5]
    doc = shadows_of(fragile_cloud).store.get(GW, "boiler")
    assert doc.version == 5 and doc.reported == {"n": 4}
    assert shadows_of(fragile_cloud).stats.db_failures >= 1


def _devices(service: CloudService) -> None:
    registry = SqlRegistryStore(service.engine, make_db_breaker(3, 1.0))
    registry.add_device(GW, "boiler", 0, kind="actuator",
                        capabilities=["switch_on", "switch_off"])
    registry.add_device(GW, "grid", 0, kind="meter", capabilities=[], role="grid")
    registry.add_device("gw-2", "pump", 0, kind="actuator", capabilities=["switch_on"])


async def test_rest_patch_sets_desired_publishes_the_delta_and_get_shows_it(
        cloud: CloudService, probe: ShadowProbe) -> None:
    _devices(cloud)
    async with api_client(cloud) as api:
        assert (await api.get(f"/api/v1/devices/{GW}.boiler/shadow")).status_code == 404
        patched = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                  json={"desired": {"state": "on"}})
        assert patched.status_code == 200, patched.text
        assert patched.json()["version"] == 1
        delta = probe.reply("/update/delta")
        assert delta["state"] == {"state": "on"}
        got = (await api.get(f"/api/v1/devices/{GW}.boiler/shadow")).json()
        assert got["state"]["delta"] == {"state": "on"}

        stale = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                json={"desired": {"state": "off"}, "version": 0})
        assert stale.status_code == 409 and stale.json()["version"] == 1
        bad_key = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                  json={"desired": {"colour": "red"}})
        assert bad_key.status_code == 422 and "desired.colour" in bad_key.json()["detail"]
        not_capable = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                      json={"desired": {"value": 55}})
        assert not_capable.status_code == 422 and "set_setpoint" in not_capable.text
        meter = await api.patch(f"/api/v1/devices/{GW}.grid/shadow",
                                json={"desired": {"state": "on"}})
        assert meter.status_code == 422
        cleared = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                  json={"desired": None, "version": 1})
        assert cleared.status_code == 200 and "desired" not in cleared.json()["state"]


async def test_rest_shadow_of_another_home_is_404_and_needs_credentials(
        cloud: CloudService) -> None:
    _devices(cloud)
    home_with_owner(cloud.engine, "a@example.com", GW)
    home_with_owner(cloud.engine, "b@example.com", "gw-2")
    async with api_client(cloud) as api:
        token = (await api.post("/api/v1/auth/token", data={
            "username": "a@example.com", "password": "correct horse battery"})).json()
        owner = {"Authorization": f"Bearer {token['access_token']}"}
        mine = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                               json={"desired": {"state": "on"}}, headers=owner)
        assert mine.status_code == 200
        theirs = await api.get("/api/v1/devices/gw-2.pump/shadow", headers=owner)
        nowhere = await api.get("/api/v1/devices/gw-9.nothing/shadow", headers=owner)
        assert theirs.status_code == nowhere.status_code == 404
        assert (await api.patch("/api/v1/devices/gw-2.pump/shadow", headers=owner,
                                json={"desired": {"state": "on"}})).status_code == 404
        anonymous = await api.get(f"/api/v1/devices/{GW}.boiler/shadow",
                                  headers=headers("hw_not-a-key"))
        assert anonymous.status_code == 401
    assert operator_key(cloud.engine)  # the schema is migrated and keys still issue


async def test_rest_patch_while_the_broker_is_down_is_kept_for_the_gateway(
        cloud: CloudService, broker: Mosquitto) -> None:
    _devices(cloud)
    async with api_client(cloud) as api:
        broker.stop()
        patched = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                  json={"desired": {"state": "on"}})
        assert patched.status_code == 200
        broker.start()
    probe = ShadowProbe(broker)
    try:
        probe.send(f"{BASE}/get", {"clientToken": "after"})
        assert probe.reply("/get/accepted", timeout=20)["state"]["delta"] == {"state": "on"}
    finally:
        probe.close()


async def test_rest_desired_the_device_already_reports_is_not_kept_to_fight_local_changes(
        cloud: CloudService, probe: ShadowProbe) -> None:
    _devices(cloud)
    probe.send(f"{BASE}/update", {"state": {"reported": {"state": "on"}}})
    assert probe.reply("/update/accepted")["version"] == 1
    async with api_client(cloud) as api:
        patched = await api.patch(f"/api/v1/devices/{GW}.boiler/shadow",
                                  json={"desired": {"state": "on"}})
        assert patched.status_code == 200
        assert "desired" not in patched.json()["state"]
    assert "clientToken" not in probe.reply("/update/accepted")  # the REST update's
    # the homeowner switches it off locally: nothing in the cloud wants it back on
    probe.send(f"{BASE}/update", {"state": {"reported": {"state": "off"}}, "clientToken": "l"})
    assert probe.reply("/update/accepted")["clientToken"] == "l"
    probe.send(f"{BASE}/get", {"clientToken": "g"})
    got = probe.reply("/get/accepted")
    assert "delta" not in got["state"] and got["state"]["reported"] == {"state": "off"}
