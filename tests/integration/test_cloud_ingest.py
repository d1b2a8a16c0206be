"""Ingestion through a real Mosquitto into SQLite and PostgreSQL."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_sync.bootstrap import CloudService
from protocols import encode, topics
from tests.integration.conftest_cloud import (  # noqa: F401 - fixtures
    GW,
    Edge,
    broker,
    cloud,
    cloud_settings,
    db_url,
    edge,
    make_batch,
    register,
    started,
    wait_until,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def test_good_batches_are_stored_once_and_acked(cloud: CloudService, edge: Edge) -> None:
    for first in range(1, 1001, 100):
        edge.send(make_batch(first, 100))
    edge.wait_acked(GW, range(1, 1001))
    assert cloud.store.count_readings(GW) == 1000
    assert cloud.worker.stats.dead_lettered == 0


def test_resent_batch_is_stored_once_and_acked_again(cloud: CloudService, edge: Edge) -> None:
    batch = make_batch(1, 50)
    edge.send(batch)
    edge.wait_acked(GW, range(1, 51))
    acks_before = edge.ack_messages
    edge.send(batch)
    wait_until(lambda: edge.ack_messages > acks_before, what="second ack")
    assert cloud.store.count_readings(GW) == 50
    assert cloud.worker.stats.duplicate_readings == 50


def _poison_payloads(good: bytes) -> list[tuple[str, bytes]]:
    """Ten kinds of bad message: (topic, payload)."""
    doc = json.loads(good)
    t = topics.telemetry(GW)

    def variant(**changes: object) -> bytes:
        return json.dumps({**doc, **changes}).encode()

    def reading(**changes: object) -> bytes:
        return variant(readings=[{**doc["readings"][0], **changes}])

    return [
        (t, b"this is not json"),
        (t, good[: len(good) // 2]),
        (t, reading(value="lots")),
        (topics.telemetry("gw-unknown"), variant(gateway_id="gw-unknown")),
        (t, good + b" " * (topics.MAX_PAYLOAD_BYTES + 10)),
        (t, variant(schema_version=99)),
        (t, variant(readings=[])),
        (t, good.replace(b'"value":', b'"value":NaN,"x":', 1)),
        (topics.telemetry("gw-2"), good),
        (t, bytes(range(256)) * 3),
    ]


def test_poison_payloads_are_dead_lettered_and_never_stall_good_ones(
        cloud: CloudService, edge: Edge) -> None:
    kinds = _poison_payloads(encode(make_batch(1, 5)))
    good_batches, bad_sent = 0, 0
    seq = 1
    for i in range(1000):
        topic, payload = kinds[i % len(kinds)]
        edge.publish(topic, payload)
        bad_sent += 1
        if i % 10 == 0:
            edge.send(make_batch(seq, 20))
            seq += 20
            good_batches += 1
    edge.wait_acked(GW, range(1, seq), timeout=60)
    wait_until(lambda: cloud.worker.stats.dead_lettered == bad_sent, 60, "all dead letters")
    assert cloud.store.count_readings(GW) == good_batches * 20
    assert cloud.store.count_readings("gw-2") == 0
    letters = cloud.store.dead_letters(None, 2000)
    assert len(letters) == 1000
    reasons = {d.reason.split(":")[0] for d in letters}
    assert reasons == {"not_json", "invalid", "unknown_gateway", "oversize", "topic_mismatch"}
    stats = cloud.worker.stats
    assert stats.acked_messages == stats.received == 1000 + good_batches


def test_backpressure_a_tiny_queue_loses_nothing(
        db_url: str, broker: Mosquitto, tmp_path: Path, edge: Edge) -> None:
    # Mosquitto 2.0.11 ignores Receive Maximum after the first acks and overruns the queue;
    # refused messages must come back through the resumed session.
    settings = cloud_settings(db_url, broker, tmp_path, ingest_queue_size=30)
    register(settings, GW)
    service = started(settings)
    try:
        for first in range(1, 3001, 20):
            edge.send(make_batch(first, 20))
        edge.wait_acked(GW, range(1, 3001), timeout=60)
        assert service.store.count_readings(GW) == 3000
        assert service.worker.stats.overflowed > 0  # the queue really was full
    finally:
        service.stop()


def test_shared_subscription_consumes_the_stream(
        db_url: str, broker: Mosquitto, tmp_path: Path, edge: Edge) -> None:
    settings = cloud_settings(db_url, broker, tmp_path, share_group="homewatt")
    register(settings, GW)
    service = started(settings)
    try:
        edge.send(make_batch(1, 10))
        edge.wait_acked(GW, range(1, 11))
        assert service.store.count_readings(GW) == 10
    finally:
        service.stop()
