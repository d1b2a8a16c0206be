"""The Jobs store on SQLite and PostgreSQL: timeouts, replicas racing one execution's version,
notify-next sent once across replicas, malformed requests answered, state across restarts."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sync.bootstrap import CloudService
from cloud_sync.db import migrate
from cloud_sync.db.engine import make_engine
from cloud_sync.db.jobs_store import SqlJobsStore
from cloud_sync.db.store import make_db_breaker
from protocols.jobs import (
    JobsError,
    JobsErrorCode,
    StartNextRequest,
    UpdateRequest,
    subscriptions,
)
from tests.integration.conftest_cloud import db_url, started
from tests.integration.jobs_fixtures import jobs_broker, jobs_cloud
from tests.services import Mosquitto

__all__ = ["db_url", "jobs_broker", "jobs_cloud"]
pytestmark = pytest.mark.integration
T0 = 1_795_000_000_000
MIN = 60_000


def replica(url: str) -> SqlJobsStore:
    return SqlJobsStore(make_engine(url), make_db_breaker(3, 1.0))


@pytest.fixture
def stores(db_url: str) -> list[SqlJobsStore]:
    first = replica(db_url)
    migrate.upgrade(first.engine)
    made = [first, replica(db_url)]
    yield made  # type: ignore[misc]
    for s in made:
        s.engine.dispose()


def test_step_and_in_progress_timeouts(stores: list[SqlJobsStore]) -> None:
    store = stores[0]
    store.create_job("j1", {"n": 1}, T0, in_progress_timeout_min=60)
    store.create_job("j2", {"n": 2}, T0)
    store.queue_executions("j1", ["a", "b"], T0)
    store.queue_executions("j2", ["a"], T0 + 1)
    store.start_next("a", StartNextRequest(stepTimeoutInMinutes=5), T0)
    store.start_next("b", StartNextRequest(), T0)
    assert store.sweep_timeouts(T0 + 5 * MIN - 1) == 0
    assert store.sweep_timeouts(T0 + 5 * MIN) == 1  # a's step timer
    assert store.execution("j1", "a")["status"] == "TIMED_OUT"
    # an update can reset the step timer but never the job's in-progress timeout
    store.update("b", "j1", UpdateRequest(status="IN_PROGRESS", stepTimeoutInMinutes=120),
                 T0 + 30 * MIN)
    assert store.sweep_timeouts(T0 + 60 * MIN) == 1
    assert store.execution("j1", "b")["status"] == "TIMED_OUT"
    with pytest.raises(JobsError) as info:
        store.update("b", "j1", UpdateRequest(status="SUCCEEDED"), T0 + 61 * MIN)
    assert info.value.code is JobsErrorCode.INVALID_STATE_TRANSITION
    # a's next execution is now j2: its notify-next is pending
    sent: list[tuple[str, Any]] = []
    store.publish_notifications(lambda thing, ex: sent.append((thing, ex)) or True)
    assert ("a", "j2") in {(t, e["jobId"] if e else None) for t, e in sent}


def test_replicas_racing_one_execution_bump_its_version_once_per_update(
        stores: list[SqlJobsStore]) -> None:
    a = stores[0]
    a.create_job("j", {}, T0)
    a.queue_executions("j", ["gw"], T0)
    a.start_next("gw", StartNextRequest(), T0)  # version 2
    outcomes: list[str] = []
    lock = threading.Lock()

    def update(store: SqlJobsStore, i: int) -> None:
        try:
            store.update("gw", "j", UpdateRequest(status="IN_PROGRESS", expectedVersion=2,
                                                  statusDetails={"who": str(i)}), T0 + i)
            result = "ok"
        except JobsError as exc:
            result = exc.code.value
        with lock:
            outcomes.append(result)
    threads = [threading.Thread(target=update, args=(stores[i % 2], i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("ok") == 1 and outcomes.count("VersionMismatch") == 7
    assert a.execution("j", "gw")["versionNumber"] == 3


def test_each_notify_next_is_sent_once_across_replicas(stores: list[SqlJobsStore]) -> None:
    stores[0].create_job("j", {}, T0)
    things = [f"gw-{i}" for i in range(40)]
    stores[0].queue_executions("j", things, T0)
    sent: list[str] = []
    lock = threading.Lock()

    def publish(thing: str, _execution: object) -> bool:
        with lock:
            sent.append(thing)
        return True
    threads = [threading.Thread(target=s.publish_notifications, args=(publish, 10))
               for s in stores for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    while stores[0].publish_notifications(publish):
        pass
    assert sorted(sent) == sorted(things)  # every thing once, none twice


def test_malformed_requests_get_rejected_and_state_survives_a_restart(
        jobs_cloud: CloudService, jobs_broker: Mosquitto, tmp_path: Path) -> None:
    store = SqlJobsStore(jobs_cloud.engine, jobs_cloud.store.breaker)
    store.create_job("j", {"v": 1}, T0)
    store.queue_executions("j", ["gw-1"], T0)
    replies: dict[str, list[dict[str, Any]]] = {}
    got = threading.Condition()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-1")

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with got:
            replies.setdefault(msg.topic, []).append(json.loads(msg.payload))
            got.notify_all()
    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", jobs_broker.port)
    client.subscribe([(f, 1) for f in subscriptions("gw-1")])
    client.loop_start()
    assert subscribed.wait(10)
    try:
        def ask(topic: str, payload: bytes) -> dict[str, Any]:
            for suffix in ("/accepted", "/rejected"):
                replies.pop(topic + suffix, None)
            client.publish(topic, payload, qos=1)
            with got:
                assert got.wait_for(lambda: any(topic + s in replies for s in
                                                ("/accepted", "/rejected")), 10)
            key = next(topic + s for s in ("/accepted", "/rejected") if topic + s in replies)
            return {"accepted": key.endswith("accepted"), **replies[key][0]}
        base = "$aws/things/gw-1/jobs"
        assert ask(f"{base}/start-next", b"{not json")["code"] == "InvalidJson"
        bad = ask(f"{base}/j/update", b'{"status": "DONE", "clientToken": "t1"}')
        assert (bad["code"], bad["clientToken"]) == ("InvalidRequest", "t1")
        assert ask(f"{base}/j/update", b'{"status": "CANCELED"}')["code"] == "InvalidRequest"
        assert ask(f"{base}/j/get", b"[]")["code"] == "InvalidJson"
        ok = ask(f"{base}/start-next", b'{"clientToken": "t2"}')
        assert ok["accepted"] and ok["execution"]["versionNumber"] == 2
        settings = jobs_cloud.settings
        jobs_cloud.stop()
        again = started(settings)  # a restarted cloud: state is in the database
        try:
            desc = ask(f"{base}/j/get", b"{}")
            assert desc["execution"]["status"] == "IN_PROGRESS"
            assert desc["execution"]["versionNumber"] == 2
        finally:
            again.stop()
    finally:
        client.disconnect()
        client.loop_stop()
