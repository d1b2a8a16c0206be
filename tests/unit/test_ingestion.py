"""The ingestion worker with fake store and bus: acks only after commit, poison never stalls."""

from __future__ import annotations

import itertools
import json

from cloud_sync.fakes import FakeIngestBus, FakeTelemetryStore
from cloud_sync.ingestion import IngestionWorker
from cloud_sync.ports import InboundMessage
from protocols import Reading, TelemetryAck, TelemetryBatch, Unit, decode, encode, topics

GW = "gw-1"
_mids = itertools.count(1)


def batch_message(first_seq: int, n: int = 3, gw: str = GW) -> InboundMessage:
    batch = TelemetryBatch(gateway_id=gw, readings=[
        Reading(meter_id="m1", channel="power_w", value=float(i), unit=Unit.WATT,
                ts=1_700_000_000_000 + i, seq=first_seq + i) for i in range(n)])
    return InboundMessage(topics.telemetry(gw), encode(batch), next(_mids), 1)


def raw_message(payload: bytes, gw: str = GW) -> InboundMessage:
    return InboundMessage(topics.telemetry(gw), payload, next(_mids), 1)


def make_worker(store: FakeTelemetryStore, bus: FakeIngestBus, **kw: object) -> IngestionWorker:
    options: dict[str, object] = {"max_wait_s": 0.0, "retry_max_s": 0.001, "queue_size": 16}
    options.update(kw)
    return IngestionWorker(store, bus, **options)  # type: ignore[arg-type]


def drain(worker: IngestionWorker) -> None:
    while worker.step(wait_s=0.0):
        pass


def acks(bus: FakeIngestBus) -> list[TelemetryAck]:
    return [decode(TelemetryAck, payload) for _, payload in bus.published]


def test_good_batch_is_stored_then_acked_over_mqtt_and_to_the_edge() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus)
    message = batch_message(1, n=3)
    assert worker.offer(message)
    drain(worker)
    assert sorted(store.rows) == [(GW, 1), (GW, 2), (GW, 3)]
    assert bus.acked == [message.mid]
    assert bus.published[0][0] == topics.telemetry_ack(GW)
    assert [(r.first, r.last) for r in acks(bus)[0].ranges] == [(1, 3)]


def test_resent_batch_is_stored_once_and_acked_again() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus)
    first, resent = batch_message(1), batch_message(1)
    worker.offer(first)
    drain(worker)
    worker.offer(resent)
    drain(worker)
    assert len(store.rows) == 3
    assert bus.acked == [first.mid, resent.mid]
    assert len(acks(bus)) == 2
    assert worker.stats.duplicate_readings == 3


def test_poison_goes_to_dead_letters_and_good_messages_around_it_are_stored() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus)
    messages = [batch_message(1), raw_message(b"{{nope"), batch_message(4, gw="gw-stranger"),
                raw_message(batch_message(7, gw="gw-2").payload),  # on gw-1's topic
                batch_message(10)]
    for message in messages:
        assert worker.offer(message)
    drain(worker)
    assert sorted(seq for _, seq in store.rows) == [1, 2, 3, 10, 11, 12]
    reasons = [d.reason.split(":")[0] for d in store.dead]
    assert reasons == ["not_json", "unknown_gateway", "topic_mismatch"]
    assert bus.acked == [m.mid for m in messages]
    assert store.commits == 1  # one group, one transaction


def test_database_outage_withholds_acks_until_the_group_is_stored() -> None:
    outage = {"calls_left_failing": 3}

    def failing() -> bool:
        outage["calls_left_failing"] -= 1
        return outage["calls_left_failing"] >= 0

    store, bus = FakeTelemetryStore({GW}, fail=failing), FakeIngestBus()
    worker = make_worker(store, bus)
    message = batch_message(1)
    worker.offer(message)
    drain(worker)
    assert worker.stats.db_failures == 3
    assert len(store.rows) == 3
    assert bus.acked == [message.mid]


def test_stopped_worker_leaves_the_failing_group_unacked() -> None:
    store, bus = FakeTelemetryStore({GW}, fail=lambda: True), FakeIngestBus()
    worker = make_worker(store, bus)
    worker.offer(batch_message(1))
    worker.stop()  # sets the stop flag: the retry loop gives up after one attempt
    worker.step(wait_s=0.0)
    assert bus.acked == []
    assert store.rows == {}


def test_full_queue_refuses_and_counts_instead_of_blocking_the_network_thread() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus, queue_size=2)
    results = [worker.offer(batch_message(seq)) for seq in (1, 10, 20)]
    assert results == [True, True, False]
    assert worker.stats.overflowed == 1
    assert worker.stats.received == 2


def test_group_is_bounded_by_reading_count() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus, max_readings=5, max_wait_s=1.0)
    for first in (1, 4, 7, 10):
        worker.offer(batch_message(first, n=3))
    drain(worker)
    assert store.commits == 2
    assert len(store.rows) == 12


def test_acks_for_one_gateway_are_merged_into_ranges() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus)
    for first in (1, 4, 20):
        worker.offer(batch_message(first, n=3))
    drain(worker)
    (ack,) = acks(bus)
    assert [(r.first, r.last) for r in ack.ranges] == [(1, 6), (20, 22)]


def test_acks_that_fail_while_the_broker_is_down_are_sent_when_it_is_back() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    bus.connected = False
    worker = make_worker(store, bus)
    message = batch_message(1)
    worker.offer(message)
    drain(worker)
    assert len(store.rows) == 3
    assert (worker.stats.acked_messages, bus.acked, bus.published) == (0, [], [])
    bus.connected = True
    worker.step(wait_s=0.0)
    assert bus.acked == [message.mid]
    assert len(bus.published) == 1


def test_dead_letter_keeps_raw_bytes_topic_and_time() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = IngestionWorker(store, bus, max_wait_s=0.0, now_ms=lambda: 42)
    payload = json.dumps({"hello": "world"}).encode()
    worker.offer(raw_message(payload))
    drain(worker)
    (dead,) = store.dead
    assert (dead.payload, dead.topic, dead.received_at) == (payload, topics.telemetry(GW), 42)


def test_redelivered_copy_of_a_held_message_is_skipped_not_stored_twice() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus)
    original = raw_message(b"garbage")
    copy = InboundMessage(original.topic, original.payload, original.mid, 1, dup=True)
    assert worker.offer(original)
    assert worker.offer(copy)
    drain(worker)
    assert len(store.dead) == 1
    assert worker.stats.redelivered_copies == 1


def test_refused_messages_are_requested_again_once_the_queue_has_room() -> None:
    store, bus = FakeTelemetryStore({GW}), FakeIngestBus()
    worker = make_worker(store, bus, queue_size=1)
    worker.offer(batch_message(1))
    assert not worker.offer(batch_message(10))
    drain(worker)
    assert bus.redelivery_requests >= 1
